"""Settings: every documented default and bound, written out, and the exact messages."""

from __future__ import annotations

from decimal import Decimal

import pytest

from esl_sync.settings import ConfigurationError, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.names():
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_SECRET_ARN", raising=False)
    for name in ("AWS_LAMBDA_FUNCTION_NAME", "AWS_SAM_LOCAL"):
        monkeypatch.delenv(name, raising=False)


DEFAULTS: dict[str, object] = {
    "clover_sync_interval_seconds": 300,
    "clover_dispatch_spread_seconds": None,
    "clover_cleanup_interval_hours": 24,
    "clover_cleanup_every_n_polls": 10,
    "clover_instance_rps": 50,
    "clover_page_size": 1000,
    "clover_overlap_ms": 120_000,
    "clover_max_delete_fraction": Decimal("0.2"),
    "clover_sweep_always_allowed": 3,
    "clover_timeout_seconds": 10.0,
    "clover_token_refresh_margin_seconds": 300,
    "clover_webhook_poll_window_seconds": 10,
    "hipoink_batch_size": 200,
    "hipoink_timeout_seconds": 15.0,
    "hipoink_block_cooldown_seconds": 600,
    "label_heal_after_seconds": 900,
    "label_heal_per_poll": 2000,
    "clover_instance_in_flight": 10,
    "clover_oauth_state_ttl_seconds": 600,
    "clover_oauth_redirect_uri": None,
    "onboarding_store_code_template": "",
    "database_idle_session_timeout_seconds": 0,
    "database_session_settings": "on",
}


def test_every_default_is_the_documented_one() -> None:
    """The README's "Configuration" table, written out."""
    loaded = load_settings()
    assert {name: getattr(loaded, name) for name in DEFAULTS} == DEFAULTS


# (variable, lowest accepted, highest accepted; None: unbounded); one past each is refused.
BOUNDS = [
    ("CLOVER_SYNC_INTERVAL_SECONDS", 60, 86_400),
    ("CLOVER_DISPATCH_SPREAD_SECONDS", 0, 900),
    ("CLOVER_CLEANUP_INTERVAL_HOURS", 1, 720),
    ("CLOVER_CLEANUP_EVERY_N_POLLS", 1, None),
    ("CLOVER_INSTANCE_RPS", 1, 50),
    ("CLOVER_PAGE_SIZE", 1, 1000),
    ("CLOVER_OVERLAP_MS", 0, None),
    ("CLOVER_SWEEP_ALWAYS_ALLOWED", 0, 100),
    ("CLOVER_TOKEN_REFRESH_MARGIN_SECONDS", 0, 86_400),
    ("CLOVER_WEBHOOK_POLL_WINDOW_SECONDS", 0, 3600),
    ("HIPOINK_BATCH_SIZE", 1, 1000),
    ("HIPOINK_BLOCK_COOLDOWN_SECONDS", 1, 86_400),
    ("LABEL_HEAL_AFTER_SECONDS", 0, 604_800),
    ("LABEL_HEAL_PER_POLL", 1, 100_000),
    ("CLOVER_INSTANCE_IN_FLIGHT", 1, 10),
    ("CLOVER_OAUTH_STATE_TTL_SECONDS", 60, 3600),
    ("DATABASE_IDLE_SESSION_TIMEOUT_SECONDS", 0, 86_400),
]


@pytest.mark.parametrize(("name", "lowest", "highest"), BOUNDS)
def test_each_bound_is_the_documented_one(
    monkeypatch: pytest.MonkeyPatch, name: str, lowest: int, highest: int | None
) -> None:
    for value, accepted in [(lowest, True), (lowest - 1, False)] + (
        [] if highest is None else [(highest, True), (highest + 1, False)]
    ):
        monkeypatch.setenv(name, str(value))
        if accepted:
            assert getattr(load_settings(), name.lower()) == value
        else:
            with pytest.raises(ConfigurationError, match=f"^invalid setting: {name}: "):
                load_settings()


@pytest.mark.parametrize(
    ("name", "accepted", "refused"),
    [
        ("CLOVER_MAX_DELETE_FRACTION", ["0", "1"], ["-0.01", "1.01"]),
        *(
            (name, ["0.001", "900", "9e2"], ["0", "900.001", "inf", "Infinity", "1e400", "nan"])
            for name in ("CLOVER_TIMEOUT_SECONDS", "HIPOINK_TIMEOUT_SECONDS")
        ),
    ],
)
def test_fractions_and_timeouts(
    monkeypatch: pytest.MonkeyPatch, name: str, accepted: list[str], refused: list[str]
) -> None:
    for value in accepted:
        monkeypatch.setenv(name, value)
        load_settings()
    for value in refused:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigurationError, match=name):
            load_settings()


def test_database_session_settings_is_on_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """README "Configuration": ``on`` (the default) or ``off`` (behind RDS Proxy), nothing else."""
    for value in ("on", "off"):
        monkeypatch.setenv("DATABASE_SESSION_SETTINGS", value)
        assert load_settings().database_session_settings == value
    for value in ("true", "false", "OFF", " on", ""):
        monkeypatch.setenv("DATABASE_SESSION_SETTINGS", value)
        with pytest.raises(
            ConfigurationError, match=r"^invalid setting: DATABASE_SESSION_SETTINGS: "
        ):
            load_settings()


def _refusal(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    """The message load_settings() fails with in this environment."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    return str(refused.value)


def test_every_bad_value_is_named_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _refusal(monkeypatch, CLOVER_PAGE_SIZE="0", HIPOINK_BATCH_SIZE="x") == (
        "invalid setting: CLOVER_PAGE_SIZE: Input should be greater than or equal to 1;"
        " HIPOINK_BATCH_SIZE: Input should be a valid integer, unable to parse string as an"
        " integer"
    )


def test_an_endless_timeout_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """``inf`` reads as a float, and was taken: a call that never answered held the poll
    until the function's own timeout. Now at most 900 s (Lambda's limit)."""
    assert _refusal(monkeypatch, CLOVER_TIMEOUT_SECONDS="inf", HIPOINK_TIMEOUT_SECONDS="NaN") == (
        "invalid setting: CLOVER_TIMEOUT_SECONDS: Input should be less than or equal to 900;"
        " HIPOINK_TIMEOUT_SECONDS: Input should be less than or equal to 900"
    )


def test_require_names_every_missing_variable_in_one_line() -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings().require("poll_queue_url", "hipoink_sign", "label_queue_url")
    assert str(refused.value) == (
        "missing setting: POLL_QUEUE_URL, HIPOINK_SIGN (or HIPOINK_SIGN_SECRET_ARN),"
        " LABEL_QUEUE_URL"
    )


def test_required_gives_the_value_or_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings().required("state_table_name")
    assert str(refused.value) == "missing setting: STATE_TABLE_NAME"
    monkeypatch.setenv("STATE_TABLE_NAME", "esl-state")
    assert load_settings().required("state_table_name") == "esl-state"


def test_a_configured_spread_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOVER_DISPATCH_SPREAD_SECONDS", "30")
    assert load_settings().dispatch_spread_seconds == 30


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "HIPOINK_VARIABLE_PRICE_TEXT",
            "see\ncashier",
            "Value error, must be printable text (no control characters)",
        ),
        (
            "CLOVER_API_BASE_URL",
            "api.clover.com",
            "Value error, must start with http:// or https://",
        ),
        ("HIPOINK_API_BASE_URL", "ftp://esl", "Value error, must start with http:// or https://"),
    ],
)
def test_a_malformed_value_says_what_is_expected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    assert _refusal(monkeypatch, **{name: value}) == f"invalid setting: {name}: {message}"


def test_a_deployed_function_refuses_plain_http(monkeypatch: pytest.MonkeyPatch) -> None:
    deployed = {"AWS_LAMBDA_FUNCTION_NAME": "esl-sync-poller"}
    assert _refusal(monkeypatch, **deployed, HIPOINK_API_BASE_URL="http://esl.example.com") == (
        "invalid setting: HIPOINK_API_BASE_URL: Value error, must start with https:// in a"
        " deployed function"
    )


def test_a_base_url_loses_only_its_trailing_slashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIPOINK_API_BASE_URL", "https://esl.example.com/ESL-X//")
    assert load_settings().hipoink_api_base_url == "https://esl.example.com/ESL-X"


def test_the_default_spread_is_whole_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOVER_SYNC_INTERVAL_SECONDS", "301")
    assert load_settings().dispatch_spread_seconds == 240


@pytest.mark.parametrize(
    "uri", ["https://esl.example.com/clover/oauth/callback", "http://127.0.0.1:4010/cb"]
)
def test_a_plain_redirect_uri_is_taken_as_it_is(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    monkeypatch.setenv("CLOVER_OAUTH_REDIRECT_URI", uri)
    assert load_settings().clover_oauth_redirect_uri == uri


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("https://esl.example.com/cb?next=1", "must be a plain URL without query or fragment"),
        ("https://esl.example.com/cb#top", "must be a plain URL without query or fragment"),
        ("https://esl.example.com/caf\u00e9", "must be a plain URL without query or fragment"),
        ("https://esl.example.com/cb\x7f", "must be a plain URL without query or fragment"),
        ("esl.example.com/cb", "must start with http:// or https://"),
    ],
)
def test_a_redirect_uri_clover_cannot_send_back_to_is_refused(
    monkeypatch: pytest.MonkeyPatch, uri: str, message: str
) -> None:
    assert _refusal(monkeypatch, CLOVER_OAUTH_REDIRECT_URI=uri) == (
        f"invalid setting: CLOVER_OAUTH_REDIRECT_URI: Value error, {message}"
    )


@pytest.mark.parametrize(
    "template", ["", "{merchant_id}", "CLV-{merchant_id}-1", "S{merchant_id}" + "x" * 50]
)
def test_a_store_code_template_names_the_merchant_once_or_is_empty(
    monkeypatch: pytest.MonkeyPatch, template: str
) -> None:
    monkeypatch.setenv("ONBOARDING_STORE_CODE_TEMPLATE", template)
    assert load_settings().onboarding_store_code_template == template


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("CLV-{merchant_id", "Value error, unbalanced braces"),
        ("{store}", "Value error, the only placeholder allowed is {merchant_id}"),
        ("{merchant_id!r}", "Value error, the only placeholder allowed is {merchant_id}"),
        ("{merchant_id:>20}", "Value error, the only placeholder allowed is {merchant_id}"),
        ("CLV", "Value error, must hold {merchant_id} (one store per merchant)"),
        ("S{merchant_id}" + "x" * 51, "String should have at most 64 characters"),
    ],
)
def test_a_store_code_template_that_cannot_name_one_store_per_merchant_is_refused(
    monkeypatch: pytest.MonkeyPatch, template: str, message: str
) -> None:
    assert _refusal(monkeypatch, ONBOARDING_STORE_CODE_TEMPLATE=template) == (
        f"invalid setting: ONBOARDING_STORE_CODE_TEMPLATE: {message}"
    )


def test_settings_built_in_code_may_leave_the_redirect_uri_out() -> None:
    """The local stack and the tests build settings in code; None is "not configured"."""
    assert Settings(clover_oauth_redirect_uri=None).clover_oauth_redirect_uri is None
