"""Every setting of the service, read once from the environment.

The variable names are a stable interface (the README's "Configuration"). A malformed
value fails at start with a message naming the variable; a value that only some functions
need is checked by :meth:`Settings.require` when that function starts.

A frozen dataclass over ``os.environ`` (names matched case-insensitively), each value read
by :mod:`esl_sync.env_text` exactly as the pydantic model it replaces read it: pydantic's
import and first model cost the poller ≈ 110 ms of a ≈ 320 ms cold start (issue 15), and
every setting is a scalar or a comma-separated list, which needs none of it.
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from typing import Any, Literal

from esl_sync.env_text import (
    Bounded,
    Invalid,
    OneOf,
    OrNone,
    Reader,
    ShortText,
    Then,
    boolean,
    decimal,
    integer,
    number,
    text,
)
from esl_sync.hipoink.records import ExtraFields, parse_extra_fields
from esl_sync.secret import Secret

DEFAULT_CLOVER_BASE_URL = "https://api.clover.com"
TIMEOUT_MAX_SECONDS = 900
"""The longest HTTP timeout taken (Lambda's own limit: 15 minutes). ``inf`` (which a float
reads) would be an endless wait: a call that never answers would hold the poll or the job
until the function's own timeout, instead of failing as retryable."""
POLL_LEASE_MS = 330_000
"""How long a poll holds its merchant (:mod:`esl_sync.sync.lease`): the poller's Lambda
timeout (300 s) and a margin, so a poll killed by its timeout frees the merchant half a
minute later."""
REFRESH_LOCK_TIMEOUTS = 3
"""The token refresh lock lasts this many ``CLOVER_TIMEOUT_SECONDS`` (a refresh is one
request): :attr:`Settings.refresh_lock_ms`."""
WEBHOOK_POLL_WINDOW_MAX_SECONDS = 3600
CLOCK_SKEW_MS = 60_000
"""How far ahead of the reader's clock a time another of the app's hosts wrote may lie
(two Lambda instances' clocks): an install state issued so far ahead still counts
(:mod:`esl_sync.oauth_state`), and a lease, lock or window may end so far past its longest
hold (:mod:`esl_sync.store.state_item`)."""
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


@dataclass(frozen=True, slots=True)
class Settings:
    """The environment of every function, the CLI and the local stack.

    Built from text (:meth:`from_values`, :func:`load_settings`) or in code with typed
    values (``Settings(hipoink_batch_size=2)``): either way every value is read and checked
    here, so no instance holds a value out of its bounds.
    """

    # Where things are.
    database_url: Secret | None = None
    database_url_secret_arn: str | None = None
    clover_api_base_url: str = DEFAULT_CLOVER_BASE_URL
    hipoink_api_base_url: str | None = None
    hipoink_client_id: str = "default"
    hipoink_sign: Secret | None = None
    hipoink_sign_secret_arn: str | None = None
    poll_queue_url: str | None = None
    label_queue_url: str | None = None
    state_table_name: str | None = None
    state_key_id: str | None = None
    clover_webhook_auth: Secret | None = None
    clover_webhook_auth_secret_arn: str | None = None
    clover_client_id: str | None = None
    clover_client_secret: Secret | None = None
    clover_app_secret_arn: str | None = None
    # The app's install flow (esl_sync.onboarding).
    clover_authorize_base_url: str | None = None  # default: the one of clover_api_base_url
    clover_oauth_redirect_uri: str | None = None
    clover_oauth_state_key: Secret | None = None
    clover_oauth_state_key_secret_arn: str | None = None
    clover_oauth_state_ttl_seconds: int = 600
    onboarding_store_code_template: str = ""

    # How the sync behaves.
    clover_sync_enabled: bool = True
    clover_sync_interval_seconds: int = 300
    clover_dispatch_spread_seconds: int | None = None
    clover_cleanup_interval_hours: int = 24
    clover_cleanup_every_n_polls: int = 10
    clover_instance_rps: int = 50
    clover_instance_in_flight: int = 10
    clover_page_size: int = 1000
    clover_overlap_ms: int = 120_000
    clover_max_delete_fraction: Decimal = Decimal("0.2")
    clover_sweep_always_allowed: int = 3
    clover_product_code_fields: tuple[str, ...] = ("sku", "code", "alternateName")
    clover_timeout_seconds: float = 10.0
    clover_token_refresh_margin_seconds: int = 300
    clover_webhook_poll_window_seconds: int = 10
    hipoink_batch_size: int = 200
    hipoink_f1_encoding: Literal["array", "string"] = "array"
    hipoink_timeout_seconds: float = 15.0
    hipoink_extra_fields: ExtraFields = ()
    hipoink_variable_price_text: str = ""
    hipoink_block_cooldown_seconds: int = 600
    label_heal_after_seconds: int = 900
    label_heal_per_poll: int = 2000
    label_verify_interval_hours: int = 168
    label_verify_max_drift_fraction: Decimal = Decimal("0.5")
    database_idle_session_timeout_seconds: int = 0
    database_session_settings: Literal["on", "off"] = "on"

    def __post_init__(self) -> None:
        """Read every field through its reader (text or a typed value in, the value out),
        naming every bad variable in one message, never a secret."""
        problems = []
        for name, read in _READERS.items():
            try:
                object.__setattr__(self, name, read(getattr(self, name)))
            except Invalid as error:
                problems.append(f"{name.upper()}: {error}")
        if problems:
            raise ConfigurationError(f"invalid setting: {'; '.join(problems)}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, lower case (the variables are these, upper case)."""
        return _NAMES

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> Settings:
        """Settings from ``{name: text or value}``; names that are no setting are ignored
        (the environment holds much else)."""
        known: dict[str, Any] = {k: v for k, v in values.items() if k in _READERS}
        return cls(**known)

    @property
    def dispatch_spread_seconds(self) -> int:
        """How far the dispatcher spreads merchants: most of one interval (SQS allows 900 s)."""
        if self.clover_dispatch_spread_seconds is not None:
            return self.clover_dispatch_spread_seconds
        return min(900, self.clover_sync_interval_seconds * 4 // 5)

    @property
    def refresh_lock_ms(self) -> int:
        """How long the token refresh lock lasts: a refresh is one request, and the lock
        outlives its timeout three times over (at most 2,700,000 ms)."""
        return int(self.clover_timeout_seconds * (REFRESH_LOCK_TIMEOUTS * 1000))

    def require(self, *names: str) -> None:
        """Fail with one message naming every variable this function needs but lacks.

        A secret may come either as the value itself or as ``<NAME>_SECRET_ARN``.
        """
        missing = []
        for name in names:
            if getattr(self, name) is None and getattr(self, f"{name}_secret_arn", None) is None:
                alternative = (
                    f" (or {name.upper()}_SECRET_ARN)" if f"{name}_secret_arn" in _READERS else ""
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
    """A base URL: http(s), https only in a deployed function; no trailing slash."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if deployed() and not value.startswith("https://"):
        raise ValueError("must start with https:// in a deployed function")
    return value.rstrip("/")


def _redirect_uri(value: str) -> str:
    """Where Clover sends the browser back: Clover wants https and a subpath of the app's
    site URL; it must not carry a query of its own (Clover adds one)."""
    _http_url(value)
    if "?" in value or "#" in value or not value.isascii() or not value.isprintable():
        raise ValueError("must be a plain URL without query or fragment")
    return value


def _store_code_template(value: str) -> str:
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


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text (no control characters)")
    return value


def _secret(value: object) -> Secret:
    """Any text (a SecretStr took any), held so that it never shows itself."""
    return value if isinstance(value, Secret) else Secret(text(value))


def _words(value: object) -> tuple[str, ...]:
    """A comma-separated list (``code, sku``), or a sequence of texts given in code."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, tuple | list):
        return tuple(text(part) for part in value)
    raise Invalid("Input should be a valid tuple")


def _extra_fields(value: object) -> object:
    """``f1=price_type, f2=unit_cost`` (:func:`parse_extra_fields`), or pairs given in code."""
    if isinstance(value, str):
        return parse_extra_fields(value)
    if isinstance(value, tuple | list) and all(
        isinstance(pair, tuple | list) and len(pair) == 2 for pair in value
    ):
        return tuple((text(target), text(source)) for target, source in value)
    raise Invalid("Input should be a valid tuple")


_URL = Then(text, _http_url)
_TEXT = OrNone(text)
_SECRET = OrNone(_secret)
_SECONDS = Bounded(number, gt=0, le=TIMEOUT_MAX_SECONDS)
_READERS: dict[str, Reader] = {
    "database_url": _SECRET,
    "database_url_secret_arn": _TEXT,
    "clover_api_base_url": _URL,
    "hipoink_api_base_url": OrNone(_URL),
    "hipoink_client_id": text,
    "hipoink_sign": _SECRET,
    "hipoink_sign_secret_arn": _TEXT,
    "poll_queue_url": _TEXT,
    "label_queue_url": _TEXT,
    "state_table_name": _TEXT,
    "state_key_id": _TEXT,
    "clover_webhook_auth": _SECRET,
    "clover_webhook_auth_secret_arn": _TEXT,
    "clover_client_id": _TEXT,
    "clover_client_secret": _SECRET,
    "clover_app_secret_arn": _TEXT,
    "clover_authorize_base_url": OrNone(_URL),
    "clover_oauth_redirect_uri": OrNone(Then(text, _redirect_uri)),
    "clover_oauth_state_key": _SECRET,
    "clover_oauth_state_key_secret_arn": _TEXT,
    "clover_oauth_state_ttl_seconds": Bounded(integer, ge=60, le=3600),
    "onboarding_store_code_template": Then(ShortText(64), _store_code_template),
    "clover_sync_enabled": boolean,
    "clover_sync_interval_seconds": Bounded(integer, ge=60, le=86_400),
    "clover_dispatch_spread_seconds": OrNone(Bounded(integer, ge=0, le=900)),
    "clover_cleanup_interval_hours": Bounded(integer, ge=1, le=24 * 30),
    "clover_cleanup_every_n_polls": Bounded(integer, ge=1),
    "clover_instance_rps": Bounded(integer, ge=1, le=50),
    "clover_instance_in_flight": Bounded(integer, ge=1, le=10),
    "clover_page_size": Bounded(integer, ge=1, le=1000),
    "clover_overlap_ms": Bounded(integer, ge=0),
    "clover_max_delete_fraction": Bounded(decimal, ge=0, le=1),
    "clover_sweep_always_allowed": Bounded(integer, ge=0, le=100),
    "clover_product_code_fields": _words,
    "clover_timeout_seconds": _SECONDS,
    "clover_token_refresh_margin_seconds": Bounded(integer, ge=0, le=86_400),
    "clover_webhook_poll_window_seconds": Bounded(
        integer, ge=0, le=WEBHOOK_POLL_WINDOW_MAX_SECONDS
    ),
    "hipoink_batch_size": Bounded(integer, ge=1, le=1000),
    "hipoink_f1_encoding": OneOf(("array", "string")),
    "hipoink_timeout_seconds": _SECONDS,
    "hipoink_extra_fields": Then(lambda value: value, _extra_fields),
    "hipoink_variable_price_text": Then(ShortText(32), _printable),
    "hipoink_block_cooldown_seconds": Bounded(integer, ge=1, le=86_400),
    "label_heal_after_seconds": Bounded(integer, ge=0, le=7 * 86_400),
    "label_heal_per_poll": Bounded(integer, ge=1, le=100_000),
    "label_verify_interval_hours": Bounded(integer, ge=0, le=24 * 30),
    "label_verify_max_drift_fraction": Bounded(decimal, ge=0, le=1),
    "database_idle_session_timeout_seconds": Bounded(integer, ge=0, le=86_400),
    "database_session_settings": OneOf(("on", "off")),
}
"""Each setting's reader: its type, bounds and rules (the README's "Configuration")."""
_NAMES = tuple(field.name for field in fields(Settings))  # == tuple(_READERS): a test says so


def load_settings() -> Settings:
    """Read the environment (names in any case; other variables ignored)."""
    found = {key.lower(): value for key, value in os.environ.items() if key.lower() in _READERS}
    return Settings.from_values(found)


@cache
def settings() -> Settings:
    """The settings of this process, read on first use."""
    return load_settings()
