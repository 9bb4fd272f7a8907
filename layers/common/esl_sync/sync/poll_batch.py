"""One poller invocation: a batch of poll requests, overlapped, each its own success.

Lambda hands the poller up to ``PollerBatchSize`` poll requests at once. A poll spends
most of its time waiting (on Clover, DynamoDB, Postgres), so the batch runs its polls on
up to ``workers`` threads at once: this instance's share of Clover's budget of requests in
flight (``CLOVER_INSTANCE_IN_FLIGHT``; a poll has at most one Clover request in flight, so
the instance never has more, and the pacer holds it to that share anyway). The template
sizes the share so that every instance together stays within Clover's 10.

What the threads share is safe to share: AWS clients (built before the batch fans out;
clients are thread-safe, sessions are not), the Clover client and its pacer (locked), the
database (one connection per thread: :class:`esl_sync.store.postgres.Database`), the
logger, and the metrics (added under a lock: :mod:`esl_sync.observability`). Each poll runs
in a copy of the invoking thread's context, so what the context carries (the local stack's
attribution of AWS calls) follows it.

Reporting is per batch, not per poll: a poll that changed, refused, swept, confirmed,
skipped or failed anything gets its own ``poll finished`` line, with every fact; the quiet
ones (nothing found) are named together in one line; the metrics are summed over the batch
(``SecondsSinceLastSuccess``: its maximum), zero counts left out. An idle store's poll thus
costs a few bytes of log instead of a line and a metric blob of its own, which is what
CloudWatch Logs bills.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from esl_sync.messages import MessageRefused, PollRequest, merchant_named
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import RemainingTime
from esl_sync.statement_deadline import statements_within
from esl_sync.sync.poll import PollDeps, poll_merchant
from esl_sync.sync.poll_outcome import PollOutcome

POLL_WORKER_PREFIX = "esl-sync-poll"
"""Name prefix of the worker threads (the benchmark counts their CPU as the poller's)."""

_COUNTS = {
    "ItemsFetched": "items_fetched",
    "ProductsChanged": "products_changed",
    "InvalidItems": "invalid_items",
    "LabelUpsertsQueued": "label_upserts",
    "LabelDeletesQueued": "label_deletes",
    "CloverRequests": "clover_requests",
    "FullWalkFallbacks": "full_walk_fallback",
    "DeletesConfirmed": "deletes_confirmed",
    "PollsSkipped": "skipped",
    "TransientConflicts": "conflicted",
}

_DETAIL_CHARS = 300
"""Of each own failure's detail, what the raised error quotes (its line has it whole)."""

CLOSING_MS = 10_000
"""What a poll needs after its last Clover answer (its writes, label jobs, commit, state)."""
REPORTING_MS = 5_000
"""Of :data:`CLOSING_MS`, what a poll failed for Postgres needs to report (its state saved,
its lease given back, its lines): no Postgres statement waits past the invocation's
remaining time less this (:mod:`esl_sync.statement_deadline`)."""

_pool_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def poll_batch(
    records: Sequence[Mapping[str, Any]],
    deps: PollDeps,
    *,
    workers: int,
    context: RemainingTime | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Poll every record's merchant; the records SQS should retry (a partial batch response).

    With Lambda's ``context``, no Clover request starts that could not be answered (and the
    poll closed: :data:`CLOSING_MS`) before the invocation ends: such a poll fails as
    ``CloverOutOfTime``, recorded and retried, while the batch's other polls report as ever.
    Nor does a Postgres statement wait past the invocation's remaining time less
    :data:`REPORTING_MS` (a server gone silent): such a poll fails as ``DatabaseUnanswered``,
    the poller's own failure, its connection discarded.

    Every failed poll is named (its ``poll finished`` line), so a batch whose every poll
    failed by the merchant's fault (:data:`~esl_sync.sync.poll_outcome.MERCHANTS_FAILURES`:
    Clover, the lease lost) names them all too, rather than raising: SQS retries exactly
    those. A batch that failed whole with one failure of the poller's own parts (Postgres,
    DynamoDB, KMS, a secret, a bug) raises :class:`PollsFailedInOwnParts` once every poll
    is reported: Lambda's ``Errors``, and SQS retries every record, which are then exactly
    the failed ones. So does what escapes (a crash) (docs/architecture.md, "A batch that
    failed whole"). A message that is not a poll request is no failure: it is refused by
    name, counted (``PollMessagesRefused``) and acknowledged (:func:`_refuse`)."""
    if context is None:
        return _poll_batch(records, deps, workers)
    remaining = context.get_remaining_time_in_millis
    deps = replace(deps, time_left_ms=lambda: remaining() - CLOSING_MS)
    with statements_within(lambda: remaining() - REPORTING_MS):
        return _poll_batch(records, deps, workers)


def _poll_batch(
    records: Sequence[Mapping[str, Any]], deps: PollDeps, workers: int
) -> dict[str, list[dict[str, str]]]:
    if workers > 1 and len(records) > 1:
        pool = _workers(workers)
        futures = [
            pool.submit(contextvars.copy_context().run, _poll_one, record, deps)
            for record in records
        ]
        results = [future.result() for future in futures]
    else:
        results = [_poll_one(record, deps) for record in records]
    report([outcome for _, outcome in results if outcome is not None])
    refused = sum(outcome is None for _, outcome in results)
    if refused:
        metrics.add_metric(name="PollMessagesRefused", unit=MetricUnit.Count, value=refused)
    failed = [
        message_id
        for message_id, outcome in results
        if outcome is not None and outcome.status == "failed"
    ]
    own = [o for _, o in results if o is not None and o.fault == "service"]
    if own and len(failed) == len(results):  # a raise retries every record: all failed
        raise PollsFailedInOwnParts(own, len(results)) from own[0].error
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}


class PollsFailedInOwnParts(RuntimeError):
    """Every poll of the batch failed, one or more in the poller's own parts (not the
    merchant's: :data:`~esl_sync.sync.poll_outcome.MERCHANTS_FAILURES`). Raised after the
    batch is reported, so that the invocation fails (Lambda's ``Errors``,
    ``PollerErrorsAlarm``) and SQS retries every record. ``merchant_ids`` names the polls
    that failed so; their ``poll finished`` lines are errors with the traceback."""

    def __init__(self, own: Sequence[PollOutcome], polls: int) -> None:
        self.merchant_ids = [o.merchant_id for o in own]
        named = "; ".join(f"{o.merchant_id}: {(o.detail or '')[:_DETAIL_CHARS]}" for o in own)
        super().__init__(
            f"every poll of the batch failed ({polls}), {len(own)} in the poller's own parts: "
            + named
        )


def _poll_one(record: Mapping[str, Any], deps: PollDeps) -> tuple[str, PollOutcome | None]:
    """The record's message id and its poll's outcome (``None``: refused, acknowledged)."""
    message_id, request = _read_record(record)
    if isinstance(request, MessageRefused):
        _refuse(record, message_id, request)
        return message_id, None
    return message_id, poll_merchant(request, deps)


def _refuse(record: object, message_id: str, refused: MessageRefused) -> None:
    """A poll queue message that is not a poll request (a hand-edited redrive, a message of
    another version, garbage), refused by name (docs/architecture.md, "A message that is
    not a label job or a poll request"): one error line (its message id, the merchant its
    body names if readable, the refusal's reason; never the body); the batch counts it and
    acknowledges it. Retried, it would fail the same way on every receive and page from
    the poll dead-letter queue, for a merchant the schedule polls anyway."""
    body = record.get("body") if isinstance(record, Mapping) else None
    logger.error(
        "poll request refused: not a poll message",
        message_id=message_id,
        merchant_id=merchant_named(body) if isinstance(body, str) else None,
        error=str(refused),
    )


def _read_record(record: object) -> tuple[str, PollRequest | MessageRefused]:
    """The record's message id (what a partial batch response names) and its poll request,
    or why it holds none.

    Read here rather than by Powertools' parser, whose SQS record model loads pydantic
    (≈ 110 ms of the poller's cold start, issue 15). Of the SQS envelope only what the
    poller uses is read: ``messageId`` and ``body``. The rest (receipt handle, attributes,
    MD5, event source and ARN) the parser checked for shape alone; Lambda's event source
    mapping writes them, the poller never reads them, and a record without them cannot
    reach this function from the queue, so not checking them refuses nothing that
    mattered and lets through nothing that is used.
    """
    if not isinstance(record, Mapping):
        return "", MessageRefused(PollRequest.KIND, None, "the SQS record is not an object")
    message_id = str(record.get("messageId") or "")
    body = record.get("body")
    if not isinstance(body, str):
        return message_id, MessageRefused(
            PollRequest.KIND, "body", "the SQS record has no text body"
        )
    try:
        return message_id, PollRequest.parse(body)
    except MessageRefused as refused:
        return message_id, refused


def report(outcomes: Sequence[PollOutcome]) -> None:
    """The batch's log lines and metrics (see the module docstring)."""
    quiet = [o.merchant_id for o in outcomes if o.quiet]
    for outcome in outcomes:
        if outcome.fault == "service":  # the poller's own parts: an error, as the sender's
            logger.error("poll finished", exc_info=outcome.error, **outcome.facts())
        elif outcome.fault == "conflict":  # contention the retry resolves: counted below
            logger.warning("poll finished", **outcome.facts())
        elif not outcome.quiet:
            logger.info("poll finished", **outcome.facts())
    if quiet:
        logger.info("polls without changes", polls=len(quiet), merchant_ids=quiet)
    if not outcomes:
        return
    metrics.add_metric(name="Polls", unit=MetricUnit.Count, value=len(outcomes))
    for name, field in _COUNTS.items():
        total = sum(int(getattr(o, field)) for o in outcomes)
        if total:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=total)
    ages = [o.seconds_since_last_success for o in outcomes]
    known = [age for age in ages if age is not None]
    if known:
        # No merchant dimension: its Maximum is the stalest merchant, which the freshness
        # view watches; the log line of a poll that did something names the merchant.
        oldest = max(known)
        metrics.add_metric(name="SecondsSinceLastSuccess", unit=MetricUnit.Seconds, value=oldest)


def _workers(size: int) -> ThreadPoolExecutor:
    """The process's worker threads, kept between invocations (each keeps its database
    connection); replaced only if the share changes (the local stack's settings)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != size:
            if _pool is not None:
                _pool[1].shutdown(wait=False)
            _pool = (size, ThreadPoolExecutor(size, thread_name_prefix=POLL_WORKER_PREFIX))
        return _pool[1]
