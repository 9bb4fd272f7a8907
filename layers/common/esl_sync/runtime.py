"""The composition root: the concrete stores and clients of this process, built once.

Handlers and the CLI ask here for what they need; nothing else builds a client. Every
handler is wired the same way: ``runtime.<flow>_deps()`` (:func:`dispatch_deps`,
:func:`poll_deps`, :func:`delivery_deps`, :func:`webhook_deps`, :func:`migration_deps`,
:func:`onboarding_deps`)
and one call into the logic with it. Each builder checks the settings it needs, so a
function fails at start with a message naming the missing variable. ``reset()`` forgets
everything (the local stack uses it when it changes the environment).

Imports are made inside the builders: a function imports only what it uses (the
dispatcher never loads the Clover or Hipoink clients), which keeps cold starts short.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import TYPE_CHECKING, Literal

from esl_sync.settings import ConfigurationError, deployed, settings
from esl_sync.store import aws_json
from esl_sync.store.secrets import (
    database_conninfo,
    forget_secret,
    forget_secrets,
    resolve_secret,
)

if TYPE_CHECKING:
    from esl_sync.clover.client import CloverClient
    from esl_sync.clover.oauth import CloverOAuthClient
    from esl_sync.clover.tokens import TokenKeeper
    from esl_sync.credentials import AppCredentials
    from esl_sync.deploy import MigrationDeps
    from esl_sync.hipoink.client import HipoinkClient
    from esl_sync.onboarding import OnboardingDeps
    from esl_sync.store.dynamo import DynamoStateStore
    from esl_sync.store.installs import DynamoInstallStore
    from esl_sync.store.label_ledger import PostgresLabelLedger
    from esl_sync.store.postgres import Database, PostgresMerchantDirectory
    from esl_sync.store.sqs import SqsDeadLetterQueue, SqsLabelQueue, SqsPollQueue
    from esl_sync.store.state_scan import DynamoStateItems
    from esl_sync.sync.deliver import DeliveryDeps
    from esl_sync.sync.dispatch import DispatchDeps
    from esl_sync.sync.poll import PollDeps
    from esl_sync.sync.verify import VerifyDeps
    from esl_sync.webhooks import WebhookDeps


def database_url() -> str:
    """The Postgres connection string: TLS required in a deployed function. Read through
    the secrets' five-minute cache at every call, so each connection opened uses the
    login the secret holds now (a rotated password, a restored database's new host)."""
    s = settings()
    s.require("database_url")
    text = resolve_secret("DATABASE_URL", s.database_url, s.database_url_secret_arn)
    return database_conninfo(text, require_tls=deployed())


def _reread_database_secret() -> None:
    arn = settings().database_url_secret_arn
    if arn:
        forget_secret(arn)


@cache
def database() -> Database:
    from esl_sync.store.postgres import Database

    return Database(
        database_url,
        reread=_reread_database_secret,
        idle_session_seconds=settings().database_idle_session_timeout_seconds,
        session_settings=settings().database_session_settings == "on",
    )


@cache
def merchants() -> PostgresMerchantDirectory:
    from esl_sync.store.postgres import PostgresMerchantDirectory

    return PostgresMerchantDirectory(database())


@cache
def label_ledger() -> PostgresLabelLedger:
    from esl_sync.store.label_ledger import PostgresLabelLedger

    return PostgresLabelLedger(database())


@cache
def poll_queue() -> SqsPollQueue:
    from esl_sync.store.sqs import SqsPollQueue

    return SqsPollQueue(settings().required("poll_queue_url"))


@cache
def label_queue() -> SqsLabelQueue:
    from esl_sync.store.sqs import SqsLabelQueue

    return SqsLabelQueue(settings().required("label_queue_url"))


def dead_letter_queue(queue: Literal["poll", "label"]) -> SqsDeadLetterQueue:
    """The dead-letter queue behind ``POLL_QUEUE_URL`` or ``LABEL_QUEUE_URL``."""
    from esl_sync.store.sqs import SqsDeadLetterQueue

    url = settings().required("poll_queue_url" if queue == "poll" else "label_queue_url")
    return SqsDeadLetterQueue(url)


@cache
def state_store() -> DynamoStateStore:
    from esl_sync.store.dynamo import DynamoStateStore

    s = settings()
    return DynamoStateStore(s.required("state_table_name"), s.state_key_id)


def state_items() -> DynamoStateItems:
    from esl_sync.store.state_scan import DynamoStateItems

    return DynamoStateItems(settings().required("state_table_name"))


@cache
def clover() -> CloverClient:
    """The process's Clover client, paced to this instance's share of the app's budget."""
    from esl_sync.clover.client import CloverClient
    from esl_sync.clover.pacing import RequestPacer

    s = settings()
    return CloverClient(
        page_size=s.clover_page_size,
        timeout_seconds=s.clover_timeout_seconds,
        pacer=RequestPacer(
            app_rps=s.clover_instance_rps, app_concurrency=s.clover_instance_in_flight
        ),
    )


@cache
def clover_oauth() -> CloverOAuthClient:
    """Built on the first refresh: plain tokens never need the app's credentials. The app's
    id is read for each request, through the secret's cache (a changed app is used within
    five minutes, by the exchange as by the authorize page)."""
    from esl_sync.clover.oauth import CloverOAuthClient

    s = settings()
    return CloverOAuthClient(clover_client_id, timeout_seconds=s.clover_timeout_seconds)


def clover_client_id() -> str:
    """``CLOVER_CLIENT_ID``, or the ``client_id`` of the JSON secret ``CLOVER_APP_SECRET_ARN``."""
    return settings().clover_client_id or clover_app().client_id


def clover_app() -> AppCredentials:
    """The Clover app's credentials: ``CLOVER_CLIENT_ID`` and ``CLOVER_CLIENT_SECRET``, or the
    JSON secret ``CLOVER_APP_SECRET_ARN`` (``{"client_id", "client_secret"}``), read through
    the secret's five-minute cache (a rotated secret is used within five minutes)."""
    from esl_sync.credentials import AppCredentials

    s = settings()
    if s.clover_client_id and s.clover_client_secret:
        return AppCredentials(client_id=s.clover_client_id, client_secret=s.clover_client_secret)
    if not s.clover_app_secret_arn:
        raise ConfigurationError("missing setting: CLOVER_CLIENT_ID (or CLOVER_APP_SECRET_ARN)")
    text = resolve_secret("CLOVER_APP_SECRET", None, s.clover_app_secret_arn)
    try:
        credentials = AppCredentials.parse(text, "CLOVER_APP_SECRET_ARN")
    except ValueError:  # the message would quote the secret
        raise ConfigurationError(
            'invalid setting: CLOVER_APP_SECRET_ARN: the secret must be JSON {"client_id", …}'
        ) from None
    if s.clover_client_id:  # the id set apart wins (as for the refresh)
        return credentials.with_client_id(s.clover_client_id)
    return credentials


def clover_client_secret() -> str:
    """The app's client secret, which only the install flow's code exchange needs."""
    secret = clover_app().client_secret
    if secret is None:
        raise ConfigurationError(
            'missing setting: CLOVER_CLIENT_SECRET (or "client_secret" in CLOVER_APP_SECRET_ARN)'
        )
    return secret.get_secret_value()


def oauth_state_key() -> bytes:
    """The key that signs the install flow's ``state`` (at least 32 bytes)."""
    from esl_sync import oauth_state

    s = settings()
    key = resolve_secret(
        "CLOVER_OAUTH_STATE_KEY", s.clover_oauth_state_key, s.clover_oauth_state_key_secret_arn
    ).encode()
    if len(key) < oauth_state.MIN_KEY_BYTES:
        raise ConfigurationError(
            f"invalid setting: CLOVER_OAUTH_STATE_KEY: at least {oauth_state.MIN_KEY_BYTES} bytes"
        )
    return key


_lazy = threading.Lock()


def _clover_oauth_once() -> CloverOAuthClient:
    """:func:`clover_oauth`, built by one thread only: the first refresh may come from any
    of the poller's threads (everything else is built before they start)."""
    with _lazy:
        return clover_oauth()


@cache
def token_keeper() -> TokenKeeper:
    from esl_sync.clover.tokens import TokenKeeper

    s = settings()
    return TokenKeeper(
        store=state_store(),
        refresher=_clover_oauth_once,
        margin_seconds=s.clover_token_refresh_margin_seconds,
        lock_ms=s.refresh_lock_ms,
    )


def webhook_auth() -> str:
    """Read per delivery: the secret's five-minute cache brings in a changed auth code."""
    s = settings()
    auth = resolve_secret(
        "CLOVER_WEBHOOK_AUTH", s.clover_webhook_auth, s.clover_webhook_auth_secret_arn
    )
    if not auth:
        raise ConfigurationError("invalid setting: CLOVER_WEBHOOK_AUTH is empty")
    return auth


def webhook_deps() -> WebhookDeps:
    from esl_sync.webhooks import WebhookDeps

    return WebhookDeps(
        merchants=merchants(),
        hints=state_store(),
        poll_queue=poll_queue(),
        expected_auth=webhook_auth,
        window_seconds=settings().clover_webhook_poll_window_seconds,
    )


@cache
def install_store() -> DynamoInstallStore:
    from esl_sync.store.installs import DynamoInstallStore

    s = settings()
    return DynamoInstallStore(s.required("state_table_name"), s.state_key_id)


def onboarding_deps() -> OnboardingDeps:
    from esl_sync.clover.regions import authorize_base_url
    from esl_sync.onboarding import OnboardingDeps

    s = settings()
    try:
        authorize = s.clover_authorize_base_url or authorize_base_url(s.clover_api_base_url)
    except ValueError:
        raise ConfigurationError(
            "missing setting: CLOVER_AUTHORIZE_BASE_URL (CLOVER_API_BASE_URL is not a Clover"
            " host whose authorize page is known)"
        ) from None
    return OnboardingDeps(
        client_id=clover_client_id,
        client_secret=clover_client_secret,
        state_key=oauth_state_key,
        redirect_uri=s.clover_oauth_redirect_uri,
        api_base_url=s.clover_api_base_url,
        authorize_base_url=authorize,
        state_ttl_seconds=s.clover_oauth_state_ttl_seconds,
        store_code_template=s.onboarding_store_code_template,
        exchanger=clover_oauth,
        tokens=install_store(),
        merchants=merchants(),
        poll_queue=poll_queue(),
        lock_ms=s.refresh_lock_ms,
    )


@cache
def hipoink() -> HipoinkClient:
    from esl_sync.hipoink.client import HipoinkClient

    s = settings()
    s.require("hipoink_api_base_url", "hipoink_sign")
    return HipoinkClient(
        s.required("hipoink_api_base_url"),
        s.hipoink_client_id,
        hipoink_sign,
        timeout_seconds=s.hipoink_timeout_seconds,
        f1_encoding=s.hipoink_f1_encoding,
    )


def hipoink_sign() -> str:
    """Read on every Hipoink call: the secret's five-minute cache brings in a rotated sign."""
    s = settings()
    return resolve_secret("HIPOINK_SIGN", s.hipoink_sign, s.hipoink_sign_secret_arn)


def poll_deps() -> PollDeps:
    from esl_sync.sync.poll import PollDeps

    return PollDeps(
        merchants=merchants(),
        products=database(),
        state=state_store(),
        tokens=token_keeper(),
        label_queue=label_queue(),
        label_ledger=label_ledger(),
        clover=clover(),
        settings=settings(),
    )


def dispatch_deps() -> DispatchDeps:
    from esl_sync.sync.dispatch import DispatchDeps

    return DispatchDeps(merchants(), poll_queue(), state_store(), label_ledger(), settings())


def delivery_deps() -> DeliveryDeps:
    from esl_sync.sync.deliver import DeliveryDeps

    return DeliveryDeps(ledger=label_ledger(), sink=hipoink(), settings=settings())


def verify_deps() -> VerifyDeps:
    from esl_sync.sync.verify import VerifyDeps

    return VerifyDeps(ledger=label_ledger(), hipoink=hipoink(), settings=settings())


def migration_deps() -> MigrationDeps:
    from esl_sync.deploy import MigrationDeps
    from esl_sync.store.schema import apply_migrations

    return MigrationDeps(conninfo=database_url, migrate=apply_migrations)


def forget_secret_state() -> None:
    """Forget the secrets read and the database connection built from one (and its readers),
    so that the next use reads the secret again. The local stack calls this before each
    function's first invocation: in Lambda every function is a process of its own, which
    reads its secrets itself (and the local stack records those reads per function)."""
    forget_secrets()
    if database.cache_info().currsize:
        database().close()
    for builder in (database, merchants, label_ledger):
        builder.cache_clear()


def reset() -> None:
    """Forget every cached object (closing what holds connections) and every secret."""
    forget_secrets()
    aws_json.forget_clients()  # the next stack may have its AWS elsewhere
    if database.cache_info().currsize:
        database().close()
    if clover.cache_info().currsize:
        clover().close()
    if clover_oauth.cache_info().currsize:
        clover_oauth().close()
    if hipoink.cache_info().currsize:
        hipoink().close()
    for builder in (
        settings,
        database,
        merchants,
        label_ledger,
        poll_queue,
        label_queue,
        state_store,
        install_store,
        clover,
        clover_oauth,
        token_keeper,
        hipoink,
    ):
        builder.cache_clear()
