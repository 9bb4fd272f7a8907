"""The composition root: the concrete stores and clients of this process, built once.

Handlers and the CLI ask here for what they need; nothing else builds a client.
Each builder checks the settings it needs, so a function fails at start with a message
naming the missing variable. ``reset()`` forgets everything (the local stack uses it
when it changes the environment).
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from esl_sync.clover.client import CloverClient
from esl_sync.hipoink.client import HipoinkClient
from esl_sync.settings import settings
from esl_sync.store.dynamo import DynamoStateStore
from esl_sync.store.postgres import Database, PostgresLabelLedger, PostgresMerchantDirectory
from esl_sync.store.secrets import resolve_secret
from esl_sync.store.sqs import SqsDeadLetterQueue, SqsLabelQueue, SqsPollQueue
from esl_sync.sync.poll import PollDeps


@cache
def database_url() -> str:
    s = settings()
    s.require("database_url")
    return resolve_secret("DATABASE_URL", s.database_url, s.database_url_secret_arn)


@cache
def database() -> Database:
    return Database(database_url())


@cache
def merchants() -> PostgresMerchantDirectory:
    return PostgresMerchantDirectory(database())


@cache
def label_ledger() -> PostgresLabelLedger:
    return PostgresLabelLedger(database())


@cache
def poll_queue() -> SqsPollQueue:
    s = settings()
    s.require("poll_queue_url")
    assert s.poll_queue_url is not None
    return SqsPollQueue(s.poll_queue_url)


@cache
def label_queue() -> SqsLabelQueue:
    s = settings()
    s.require("label_queue_url")
    assert s.label_queue_url is not None
    return SqsLabelQueue(s.label_queue_url)


def dead_letter_queue(queue: Literal["poll", "label"]) -> SqsDeadLetterQueue:
    """The dead-letter queue behind ``POLL_QUEUE_URL`` or ``LABEL_QUEUE_URL``."""
    s = settings()
    name = f"{queue}_queue_url"
    s.require(name)
    url = getattr(s, name)
    assert isinstance(url, str)
    return SqsDeadLetterQueue(url)


@cache
def state_store() -> DynamoStateStore:
    s = settings()
    s.require("state_table_name")
    assert s.state_table_name is not None
    return DynamoStateStore(s.state_table_name, s.state_key_id)


@cache
def clover() -> CloverClient:
    s = settings()
    return CloverClient(page_size=s.clover_page_size, timeout_seconds=s.clover_timeout_seconds)


@cache
def hipoink() -> HipoinkClient:
    s = settings()
    s.require("hipoink_api_base_url", "hipoink_sign")
    assert s.hipoink_api_base_url is not None
    return HipoinkClient(
        s.hipoink_api_base_url,
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
    return PollDeps(
        merchants=merchants(),
        products=database(),
        state=state_store(),
        tokens=state_store(),
        label_queue=label_queue(),
        label_ledger=label_ledger(),
        clover=clover(),
        settings=settings(),
    )


def reset() -> None:
    """Forget every cached object (closing what holds connections)."""
    if database.cache_info().currsize:
        database().close()
    if clover.cache_info().currsize:
        clover().close()
    if hipoink.cache_info().currsize:
        hipoink().close()
    for builder in (
        settings,
        database_url,
        database,
        merchants,
        label_ledger,
        poll_queue,
        label_queue,
        state_store,
        clover,
        hipoink,
    ):
        builder.cache_clear()
