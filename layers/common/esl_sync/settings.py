"""Every setting of the service, read once from the environment.

The variable names are a stable interface (the README's "Configuration"). A malformed
value fails at start with a message naming the variable; a value that only some functions
need is checked by :meth:`Settings.require` when that function starts.

A plain pydantic model over ``os.environ`` (names matched case-insensitively): every
setting is a scalar or a comma-separated list parsed here, so pydantic-settings (its
sources, dotenv and JSON decoding, about 50 ms of every cold start) would add nothing.
"""

from __future__ import annotations

import os
import string
from decimal import Decimal
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from esl_sync.hipoink.records import ExtraFields, parse_extra_fields

DEFAULT_CLOVER_BASE_URL = "https://api.clover.com"
RequiredText = Literal[
    "poll_queue_url", "label_queue_url", "state_table_name", "hipoink_api_base_url"
]
"""The settings without a default that some function needs: :meth:`Settings.required`."""


class ConfigurationError(RuntimeError):
    """A setting is missing or malformed; the message names the environment variable."""


def deployed() -> bool:
    """Whether this process is a function deployed to AWS Lambda.

    Lambda sets ``AWS_LAMBDA_FUNCTION_NAME``; ``sam local invoke`` sets it too, and also
    ``AWS_SAM_LOCAL=true``. The local stack, the CLI and the tests set neither. A deployed
    function refuses plain-text connections: ``http://`` base URLs and a Postgres login
    without TLS.
    """
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME")) and (
        os.environ.get("AWS_SAM_LOCAL", "").lower() != "true"
    )


class Settings(BaseModel):
    """The environment of every function, the CLI and the local stack."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Where things are.
    database_url: SecretStr | None = None
    database_url_secret_arn: str | None = None
    clover_api_base_url: str = DEFAULT_CLOVER_BASE_URL
    hipoink_api_base_url: str | None = None
    hipoink_client_id: str = "default"
    hipoink_sign: SecretStr | None = None
    hipoink_sign_secret_arn: str | None = None
    poll_queue_url: str | None = None
    label_queue_url: str | None = None
    state_table_name: str | None = None
    state_key_id: str | None = None
    clover_webhook_auth: SecretStr | None = None
    clover_webhook_auth_secret_arn: str | None = None
    clover_client_id: str | None = None
    clover_client_secret: SecretStr | None = None
    clover_app_secret_arn: str | None = None
    # The app's install flow (esl_sync.onboarding).
    clover_authorize_base_url: str | None = None  # default: the one of clover_api_base_url
    clover_oauth_redirect_uri: str | None = None
    clover_oauth_state_key: SecretStr | None = None
    clover_oauth_state_key_secret_arn: str | None = None
    clover_oauth_state_ttl_seconds: int = Field(600, ge=60, le=3600)
    onboarding_store_code_template: str = Field("", max_length=64)

    # How the sync behaves.
    clover_sync_enabled: bool = True
    clover_sync_interval_seconds: int = Field(300, ge=60, le=86_400)
    clover_dispatch_spread_seconds: int | None = Field(None, ge=0, le=900)
    clover_cleanup_interval_hours: int = Field(24, ge=1, le=24 * 30)
    clover_cleanup_every_n_polls: int = Field(10, ge=1)
    clover_instance_rps: int = Field(50, ge=1, le=50)
    clover_instance_in_flight: int = Field(10, ge=1, le=10)
    clover_page_size: int = Field(1000, ge=1, le=1000)
    clover_overlap_ms: int = Field(120_000, ge=0)
    clover_max_delete_fraction: Decimal = Field(Decimal("0.2"), ge=0, le=1)
    clover_sweep_always_allowed: int = Field(3, ge=0, le=100)
    clover_product_code_fields: tuple[str, ...] = (
        "sku",
        "code",
        "alternateName",
    )
    clover_timeout_seconds: float = Field(10.0, gt=0)
    clover_token_refresh_margin_seconds: int = Field(300, ge=0, le=86_400)
    clover_webhook_poll_window_seconds: int = Field(10, ge=0, le=3600)
    hipoink_batch_size: int = Field(200, ge=1, le=1000)
    hipoink_f1_encoding: Literal["array", "string"] = "array"
    hipoink_timeout_seconds: float = Field(15.0, gt=0)
    hipoink_extra_fields: ExtraFields = ()
    hipoink_variable_price_text: str = Field("", max_length=32)
    hipoink_block_cooldown_seconds: int = Field(600, ge=1, le=86_400)
    label_heal_after_seconds: int = Field(900, ge=0, le=7 * 86_400)
    label_heal_per_poll: int = Field(2000, ge=1, le=100_000)

    @field_validator("clover_product_code_fields", mode="before")
    @classmethod
    def _split_fields(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("hipoink_extra_fields", mode="before")
    @classmethod
    def _parse_extra_fields(cls, value: object) -> object:
        return parse_extra_fields(value) if isinstance(value, str) else value

    @field_validator("hipoink_variable_price_text")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("must be printable text (no control characters)")
        return value

    @field_validator("clover_api_base_url", "hipoink_api_base_url", "clover_authorize_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return _http_url(value).rstrip("/") if value is not None else value

    @field_validator("clover_oauth_redirect_uri")
    @classmethod
    def _redirect_uri(cls, value: str | None) -> str | None:
        """Where Clover sends the browser back: Clover wants https and a subpath of the
        app's site URL; it must not carry a query of its own (Clover adds one)."""
        if value is None:
            return value
        _http_url(value)
        if "?" in value or "#" in value or not value.isascii() or not value.isprintable():
            raise ValueError("must be a plain URL without query or fragment")
        return value

    @field_validator("onboarding_store_code_template")
    @classmethod
    def _store_code_template(cls, value: str) -> str:
        """Empty (new merchants await an operator's store code), or text with
        ``{merchant_id}`` in it, e.g. ``{merchant_id}`` or ``CLV-{merchant_id}``."""
        try:
            parts = list(string.Formatter().parse(value))
        except ValueError:
            raise ValueError("unbalanced braces") from None
        for _literal, name, spec, conversion in parts:
            if name is not None and (name != "merchant_id" or spec or conversion):
                raise ValueError("the only placeholder allowed is {merchant_id}")
        if value and not any(name for _literal, name, _spec, _conversion in parts):
            raise ValueError("must hold {merchant_id} (one store per merchant)")
        return value

    @property
    def dispatch_spread_seconds(self) -> int:
        """How far the dispatcher spreads merchants: most of one interval (SQS allows 900 s)."""
        if self.clover_dispatch_spread_seconds is not None:
            return self.clover_dispatch_spread_seconds
        return min(900, self.clover_sync_interval_seconds * 4 // 5)

    def require(self, *names: str) -> None:
        """Fail with one message naming every variable this function needs but lacks.

        A secret may come either as the value itself or as ``<NAME>_SECRET_ARN``.
        """
        missing = []
        for name in names:
            if getattr(self, name) is None and getattr(self, f"{name}_secret_arn", None) is None:
                alternative = (
                    f" (or {name.upper()}_SECRET_ARN)"
                    if f"{name}_secret_arn" in (type(self).model_fields)
                    else ""
                )
                missing.append(f"{name.upper()}{alternative}")
        if missing:
            raise ConfigurationError(f"missing setting: {', '.join(missing)}")

    def required(self, name: RequiredText) -> str:
        """The value of a setting the caller cannot do without (its type says it is there),
        or the :class:`ConfigurationError` of :meth:`require` naming the variable."""
        value: object = getattr(self, name)
        if isinstance(value, str):
            return value
        raise ConfigurationError(f"missing setting: {name.upper()}")


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if deployed() and not value.startswith("https://"):
        raise ValueError("must start with https:// in a deployed function")
    return value


def load_settings() -> Settings:
    """Read the environment, turning pydantic's error into one that names the variables."""
    names = Settings.model_fields
    found = {key.lower(): value for key, value in os.environ.items() if key.lower() in names}
    try:
        return Settings.model_validate(found)
    except ValidationError as error:
        problems = "; ".join(
            f"{'_'.join(str(part) for part in e['loc'][:1]).upper()}: {e['msg']}"
            for e in error.errors()
        )
        raise ConfigurationError(f"invalid setting: {problems}") from None


@cache
def settings() -> Settings:
    """The settings of this process, read on first use."""
    return load_settings()
