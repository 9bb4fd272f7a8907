"""The migration step of a deploy: a CloudFormation custom resource that applies the schema.

CloudFormation waits for the custom resource's answer (up to the resource's ServiceTimeout,
an hour by default), so the answer must come before the function's own timeout whatever
hangs: Secrets Manager unreachable, a Postgres that accepts the connection and never
answers, a migration waiting for a lock. The work runs in a thread with a deadline taken
from the time Lambda has left, minus what answering needs; past it the answer is FAILED
and the thread is abandoned (the advisory lock and the transaction keep a late finish
harmless: the next deploy finds the migrations recorded, or applies them). Postgres's
waits end a second before that (:mod:`esl_sync.statement_deadline`): a database that stops
answering fails the migration by name (``DatabaseUnanswered``), its connection closed, no
thread left waiting on it.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from esl_sync.events import CustomResourceEvent
from esl_sync.observability import logger
from esl_sync.records import DatabaseUnanswered
from esl_sync.statement_deadline import statements_within

PHYSICAL_ID = "esl-sync-schema"
ANSWER_RESERVE_MS = 10_000
"""Kept back from the remaining time for answering CloudFormation (one HTTPS PUT)."""
STATEMENTS_AHEAD_MS = 1_000
"""How long before the work is given up on its Postgres waits end, so that a silent
database is named (``DatabaseUnanswered``) rather than timed out."""
CONNECT_TIMEOUT_SECONDS = 10.0
REASON_LIMIT = 500  # CloudFormation shows the reason; the whole answer must stay under 4 KiB


class Migrate(Protocol):
    """Applies the migrations (:func:`esl_sync.store.schema.apply_migrations`)."""

    def __call__(
        self, conninfo: str, *, connect_timeout: float, statement_timeout_ms: int
    ) -> list[str]: ...


@dataclass(frozen=True)
class MigrationDeps:
    conninfo: Callable[[], str]
    """The database URL, resolved inside the deadline (so an unreadable secret is reported)."""
    migrate: Migrate


class MigrationTimedOut(TimeoutError):
    """The migration did not finish before the answer had to go."""


def answer_reserve_ms(remaining_ms: int) -> int:
    """What to keep for the answer: ten seconds, or a quarter of a short remaining time."""
    return min(ANSWER_RESERVE_MS, remaining_ms // 4)


def migration_answer(
    event: CustomResourceEvent, deps: MigrationDeps, remaining_ms: Callable[[], int]
) -> dict[str, Any]:
    """The answer for CloudFormation: SUCCESS with the versions applied, or FAILED with why.

    Delete does nothing: dropping the product store with the stack would lose data.
    """
    body: dict[str, Any] = {
        "PhysicalResourceId": event.physical_resource_id or PHYSICAL_ID,
        "StackId": event.stack_id,
        "RequestId": event.request_id,
        "LogicalResourceId": event.logical_resource_id,
        "Status": "SUCCESS",
        "Data": {"Applied": ""},
    }
    if event.request_type == "Delete":
        return body
    left = remaining_ms()
    reserve = answer_reserve_ms(left)
    budget_seconds = (left - reserve) / 1000
    try:
        with statements_within(lambda: remaining_ms() - reserve - STATEMENTS_AHEAD_MS):
            applied = _within(budget_seconds, lambda: _migrate(deps, budget_seconds))
    except DatabaseUnanswered as error:  # an outage, named: not a bug's traceback
        logger.error("migration failed", error_class=type(error).__name__, error=str(error))
        return failed_answer(body, error)
    except Exception as error:
        logger.exception("migration failed")
        return failed_answer(body, error)
    body["Data"] = {"Applied": ",".join(applied)}
    logger.info("migrations applied", applied=applied)
    return body


def failed_answer(body: dict[str, Any], error: BaseException) -> dict[str, Any]:
    return {**body, "Status": "FAILED", "Reason": f"{type(error).__name__}: {error}"[:REASON_LIMIT]}


def _migrate(deps: MigrationDeps, budget_seconds: float) -> list[str]:
    return deps.migrate(
        deps.conninfo(),
        connect_timeout=min(CONNECT_TIMEOUT_SECONDS, budget_seconds),
        statement_timeout_ms=int(budget_seconds * 1000),
    )


def _within(seconds: float, work: Callable[[], list[str]]) -> list[str]:
    """``work()`` in a daemon thread (with this context: logging keys, recorded AWS calls),
    its result or its error if it ends within ``seconds``; else :class:`MigrationTimedOut`."""
    if seconds <= 0:
        raise MigrationTimedOut("no time left to migrate before the function's timeout")
    outcome: dict[str, Any] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            outcome["result"] = context.run(work)
        except BaseException as error:
            outcome["error"] = error

    worker = threading.Thread(target=run, name="migration", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise MigrationTimedOut(
            f"the migration did not finish within {seconds:.0f} s (Postgres or Secrets Manager"
            " not answering, or a lock held); the next deploy applies what is missing"
        )
    if "error" in outcome:
        raise outcome["error"]
    result: list[str] = outcome["result"]
    return result
