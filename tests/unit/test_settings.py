"""Settings: the documented names and defaults, and errors that name the variable."""

from __future__ import annotations

from decimal import Decimal

import pytest

from devkit.template import REPO_ROOT
from esl_sync.settings import ConfigurationError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.names():
        monkeypatch.delenv(name.upper(), raising=False)


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings()
    assert s.clover_sync_interval_seconds == 300
    assert s.clover_sync_enabled is True
    assert s.clover_cleanup_interval_hours == 24
    assert s.clover_cleanup_every_n_polls == 10
    assert s.clover_page_size == 1000
    assert s.clover_max_delete_fraction == Decimal("0.2")
    assert s.clover_api_base_url == "https://api.clover.com"
    assert s.clover_product_code_fields == ("sku", "code", "alternateName")
    assert s.clover_token_refresh_margin_seconds == 300
    assert s.clover_webhook_poll_window_seconds == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CLOVER_SYNC_INTERVAL_SECONDS", "abc"),
        ("CLOVER_SYNC_INTERVAL_SECONDS", "5"),
        ("CLOVER_SYNC_ENABLED", "maybe"),
        ("CLOVER_PAGE_SIZE", "1001"),
        ("CLOVER_MAX_DELETE_FRACTION", "1.5"),
        ("CLOVER_API_BASE_URL", "api.clover.com"),
        ("HIPOINK_F1_ENCODING", "xml"),
        ("HIPOINK_EXTRA_FIELDS", "f1=raw"),
        ("HIPOINK_EXTRA_FIELDS", "f0=sku"),
        ("HIPOINK_BLOCK_COOLDOWN_SECONDS", "0"),
        ("LABEL_HEAL_AFTER_SECONDS", "-1"),
        ("HIPOINK_VARIABLE_PRICE_TEXT", "x" * 33),
        ("HIPOINK_VARIABLE_PRICE_TEXT", "see\ncashier"),
    ],
)
def test_a_bad_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_require_names_every_missing_variable_and_the_secret_alternative() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings().require("poll_queue_url", "hipoink_sign")
    assert "POLL_QUEUE_URL" in str(caught.value)
    assert "HIPOINK_SIGN (or HIPOINK_SIGN_SECRET_ARN)" in str(caught.value)


def test_a_secret_arn_satisfies_require(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPOINK_SIGN_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:1:secret:x")
    load_settings().require("hipoink_sign")


def test_product_code_fields_are_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOVER_PRODUCT_CODE_FIELDS", "code, sku")
    assert load_settings().clover_product_code_fields == ("code", "sku")


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPOINK_SIGN", "very-secret-sign")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/x")
    monkeypatch.setenv("CLOVER_WEBHOOK_AUTH", "clover-auth-code")
    text = repr(load_settings())
    assert "clover-auth-code" not in text
    assert "very-secret-sign" not in text
    assert "hunter2" not in text


def test_dispatch_spread_defaults_to_most_of_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().dispatch_spread_seconds == 240
    monkeypatch.setenv("CLOVER_SYNC_INTERVAL_SECONDS", "3600")
    assert load_settings().dispatch_spread_seconds == 900


def test_label_delivery_defaults_and_the_free_field_mapping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = load_settings()
    assert s.hipoink_extra_fields == ()
    assert s.hipoink_block_cooldown_seconds == 600
    assert s.label_heal_after_seconds == 900
    monkeypatch.setenv("HIPOINK_EXTRA_FIELDS", "f1=price_type,f2=unit_cost")
    assert load_settings().hipoink_extra_fields == (("f1", "price_type"), ("f2", "unit_cost"))


def test_a_variable_price_shows_no_price_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().hipoink_variable_price_text == ""
    monkeypatch.setenv("HIPOINK_VARIABLE_PRICE_TEXT", "Prix à la caisse")
    assert load_settings().hipoink_variable_price_text == "Prix à la caisse"


def test_every_setting_is_documented_in_the_readme_configuration_table() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration") : readme.index("## Command line")]
    assert [n.upper() for n in Settings.names() if f"`{n.upper()}" not in table] == []
