"""Delivering one label job to Hipoink, exactly once per label version, never backwards.

The label ledger (``label_state``) says what Hipoink already acknowledged, and from which
version of the merchant's label decisions (:attr:`esl_sync.messages.LabelJob.version`):

* a record whose label hash is acknowledged is not sent again, so duplicated SQS
  deliveries and repeated polls never double-send;
* a label older than the acknowledged version is skipped, so a replayed, redriven or late
  job never puts an older value back on the shelf. That is not an error: it is counted
  (``LabelsSkippedOlder``) and logged, and the message is acknowledged;
* a job from before versions (none) cannot be ordered against a label acknowledged before
  versions either: its labels go only where they are what the product store wants now
  (:func:`wanted_now`), and are skipped as older elsewhere.

Each of Hipoink's error classes ends differently:

* bad record: the batch is split until the refused records are isolated; they are recorded
  with Hipoink's message and not retried, and the rest go through. A retry of the job
  (a later batch failed) does not send them again, nor name another failure on them;
* retryable: what is left is recorded as failed and the error propagates, so SQS retries
  this message alone (and in the end dead-letters it);
* configuration: retrying cannot help, so the store is blocked and the message
  acknowledged. While the block holds, the store's jobs make no call; after the cool-down
  one job re-tests the store.

A job the sender does not even try, because an earlier job of its store failed in the
same batch (the FIFO group is held in order), is retried and dead-lettered along with that
one: :func:`name_skipped` names the failure on its labels too. So every label of a
dead-lettered job carries a failure, and the self-healing pass (:mod:`esl_sync.sync.heal`)
queues them again.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import batched
from typing import Any

from esl_sync.deadline import OutOfTime
from esl_sync.hipoink.errors import HipoinkConfigError, HipoinkRecordError, HipoinkRetryable
from esl_sync.hipoink.records import HipoinkRecord, label_hash
from esl_sync.messages import LabelJob
from esl_sync.observability import MetricUnit, first_named, logger, metrics
from esl_sync.ports import LabelLedger, LabelSink
from esl_sync.records import AckedLabel, LabelAck, LabelFailure, StoreBlock, TransientConflict
from esl_sync.settings import Settings
from esl_sync.sync.job_records import code_problem, record_problem

_LOGGED_CODES = 20
"""Codes named in a log line (refused, skipped as older); the count is always complete. A
job holds up to 1,000 codes of up to 64 characters (256 bytes of emoji each): named in
full, its refused codes alone were as long as the job, up to SQS's 256 KiB, past the 256 KB
of one CloudWatch Logs event."""


@dataclass
class DeliveryDeps:
    ledger: LabelLedger
    sink: LabelSink
    settings: Settings


@dataclass
class DeliveryOutcome:
    merchant_id: str
    store_code: str
    version: int | None = None
    upserted: int = 0
    deleted: int = 0
    skipped: int = 0  # already acknowledged
    skipped_older: list[str] = field(default_factory=list)  # a newer version is acknowledged
    rejected: list[str] = field(default_factory=list)
    refused_before: int = 0  # refused on an earlier receive of this job: not sent again
    blocked: str | None = None  # why (the rest of) the job was not sent to the store
    latency_seconds: float | None = None  # Clover change → Hipoink acknowledged


@dataclass(frozen=True)
class _Change:
    """One label update: show ``record`` under ``pc``, or (record None) delete ``pc``."""

    pc: str
    record: HipoinkRecord | None


def deliver(
    job: LabelJob, deps: DeliveryDeps, before_call: Callable[[], None] | None = None
) -> DeliveryOutcome:
    """Apply one job: upserts then deletes, each in batches of ``HIPOINK_BATCH_SIZE``.

    Raises only what SQS should retry; progress made before is acknowledged, so the retry
    sends only what is left. ``before_call`` runs before each Hipoink call and may refuse
    it (:class:`~esl_sync.deadline.OutOfTime`: the sender's invocation could not wait for
    it): a refused batch halved down to its culprit makes up to 2n - 1 calls in one job.
    """
    ledger, settings = deps.ledger, deps.settings
    outcome = DeliveryOutcome(job.merchant_id, job.store_code, version=job.version)
    try:
        _name_unusable(job, ledger, outcome)
        triaged = _triage(job, ledger)
        if job.version is None and triaged.send:
            triaged = wanted_now(job, triaged, ledger)
        outcome.skipped, outcome.skipped_older = len(triaged.same), triaged.older
        outcome.refused_before = len(triaged.refused)
        ledger.renew(job.merchant_id, triaged.renewed, store_code=job.store_code)
        if triaged.send:
            _Delivery(job, ledger, deps.sink, outcome, before_call).run(
                triaged.send, settings.hipoink_batch_size, settings.hipoink_block_cooldown_seconds
            )
        if job.oldest_change_ms is not None and outcome.upserted + outcome.deleted:
            outcome.latency_seconds = _latency_seconds(job.oldest_change_ms)
    except Exception as error:
        _report(outcome, error)
        raise
    _report(outcome)
    return outcome


def _name_unusable(job: LabelJob, ledger: LabelLedger, outcome: DeliveryOutcome) -> None:
    """Refuse by name the upserts that are not Hipoink records and the deletes of codes
    that are not product codes (``rejected``, its label's failure when its code is usable;
    :func:`triage` leaves them out, so the rest go on), and name the codes the job names
    twice (:func:`_usable_upserts`)."""
    _name_repeated(job)
    problems = [record_problem(r) for r in job.upserts]
    deletes = [code_problem(pc) for pc in job.deletes]
    if not any(problems) and not any(deletes):
        return
    failures: dict[str, LabelFailure] = {}
    refused = [(r.get("pc"), p) for r, p in zip(job.upserts, problems, strict=True) if p]
    refused += [(pc, p) for pc, p in zip(job.deletes, deletes, strict=True) if p]
    for pc, problem in refused:
        usable_pc = code_problem(pc) is None
        outcome.rejected.append(str(pc) if usable_pc else "(no usable pc)")
        if usable_pc:
            failures[str(pc)] = LabelFailure(str(pc), "bad_record", f"label job record: {problem}")
        logger.error(
            "label job record refused: not a Hipoink record; the others go on",
            merchant_id=job.merchant_id,
            pc=str(pc) if usable_pc else None,
            problem=problem,
        )
    ledger.record_failures(job.merchant_id, list(failures.values()))


def _usable_upserts(job: LabelJob) -> list[HipoinkRecord]:
    """The job's Hipoink records, one per code: a code named twice (a job edited by hand)
    gets its last record, what applying the job in order leaves on the shelf. Twice in one
    acknowledgement, Postgres refused the statement after Hipoink had taken the records."""
    last = {r["pc"]: r for r in job.upserts if record_problem(r) is None}
    return list(last.values())


def _usable_deletes(job: LabelJob) -> list[str]:
    """The job's deletes of product codes, each once."""
    return list(dict.fromkeys(pc for pc in job.deletes if code_problem(pc) is None))


def _name_repeated(job: LabelJob) -> None:
    upserts = Counter(r["pc"] for r in job.upserts if record_problem(r) is None)
    deletes = Counter(pc for pc in job.deletes if code_problem(pc) is None)
    repeated = {pc for counts in (upserts, deletes) for pc, n in counts.items() if n > 1}
    if repeated:
        logger.warning(
            "label job names a product code more than once: its last record applies",
            merchant_id=job.merchant_id,
            count=len(repeated),
            codes=first_named(repeated, _LOGGED_CODES),
        )


def _latency_seconds(oldest_change_ms: int) -> float:
    """Seconds from Clover's change to now, never negative. In integer milliseconds first:
    a job may carry any integer (a hand-written or corrupted one: 10**400), and a float
    division of it would raise after the labels were sent, failing a delivered job."""
    elapsed_ms = time.time_ns() // 1_000_000 - oldest_change_ms
    return 0.0 if elapsed_ms <= 0 else min(elapsed_ms, _LATENCY_CAP_MS) / 1000


_LATENCY_CAP_MS = 10 * 365 * 86_400_000
"""A change older than this (ten years: a job with a nonsense time) is reported as this."""


@dataclass(frozen=True)
class Triage:
    """What a job's labels need, given what Hipoink acknowledged."""

    send: list[_Change]
    older: list[str]  # a newer version is acknowledged: skipped
    same: list[str]  # Hipoink shows exactly this already: skipped
    renewed: list[LabelAck]  # ... from an older decision: its version moves up to the job's
    refused: list[str] = field(default_factory=list)  # Hipoink refused this job's very record


SKIPPED = "not tried: an earlier job of this store failed"


def name_skipped(job: LabelJob, ledger: LabelLedger, message: str = SKIPPED) -> int:
    """Record a retryable failure (``message``) on the labels a job not tried would have
    changed; how many."""
    send = _triage(job, ledger).send
    ledger.record_failures(
        job.merchant_id, [LabelFailure(c.pc, "retryable", message) for c in send]
    )
    return len(send)


def _triage(job: LabelJob, ledger: LabelLedger) -> Triage:
    codes = [r["pc"] for r in _usable_upserts(job)] + _usable_deletes(job)
    return triage(
        job, ledger.acknowledged(job.merchant_id, codes), ledger.refusals(job.merchant_id, codes)
    )


def triage(
    job: LabelJob, acknowledged: dict[str, AckedLabel], refused: dict[str, LabelAck] | None = None
) -> Triage:
    """Sort the job's changes (in order) by what Hipoink already shows.

    A label that already shows this record takes the job's version when that is newer, so
    a job decided between the two (redriven later) cannot put its older value back. A record
    Hipoink refused for this very job (its version, its hash: the job came back for a later
    batch's failure) is not sent again.
    """
    result = Triage([], [], [], [])
    wanted = [_Change(r["pc"], r) for r in _usable_upserts(job)]
    wanted += [_Change(pc, None) for pc in _usable_deletes(job)]
    for change in wanted:
        acked = acknowledged.get(change.pc)
        record = LabelAck(change.pc, label_hash(change.record), job.version)
        if refused is not None and refused.get(change.pc) == record:
            result.refused.append(change.pc)
        elif acked is None:
            result.send.append(change)
        elif acked.label_hash == label_hash(change.record):
            result.same.append(change.pc)
            if job.version is not None and is_older(acked.version, job.version):
                result.renewed.append(LabelAck(change.pc, acked.label_hash, job.version))
        elif is_older(job.version, acked.version):
            result.older.append(change.pc)
        else:
            result.send.append(change)
    return result


def wanted_now(job: LabelJob, triaged: Triage, ledger: LabelLedger) -> Triage:
    """The labels of a job from before versions that are still to send, kept only where
    they show what the product store wants now; the rest are older (skipped).

    Such a job (queued by code from before the upgrade, redriven from the dead-letter
    queue after it) is unordered against a label acknowledged before versions, or never
    acknowledged: sent as it is, it could put an older price, name or deletion back. Its
    value is sent only if it is the product store's (one read, as committed); a label
    skipped here already shows what is wanted, or is stale and healed from the products.
    """
    wanted = ledger.labels_wanted(job.merchant_id, [c.pc for c in triaged.send])
    current = [wanted.get(c.pc) == label_hash(c.record) for c in triaged.send]
    return replace(
        triaged,
        send=[c for c, ok in zip(triaged.send, current, strict=True) if ok],
        older=triaged.older + [c.pc for c, ok in zip(triaged.send, current, strict=True) if not ok],
    )


def is_older(version: int | None, acknowledged: int | None) -> bool:
    """Whether a label of ``version`` is older than the acknowledged one.

    No version (a job or an acknowledgement from before versions) ranks below every
    version, and two unversioned ones are not ordered (the label is sent only if it is
    what the product store wants now: :func:`wanted_now`).
    Equal versions are the same decision: sent (a settings change may have changed the
    record, never the data it shows).
    """
    return (-1 if version is None else version) < (-1 if acknowledged is None else acknowledged)


@dataclass
class _Delivery:
    """One job's sending. Changes are settled in order, so ``settled`` counts a prefix."""

    job: LabelJob
    ledger: LabelLedger
    sink: LabelSink
    outcome: DeliveryOutcome
    before_call: Callable[[], None] | None = None
    settled: int = 0

    def run(self, changes: list[_Change], batch_size: int, cooldown_seconds: int) -> None:
        merchant_id = self.job.merchant_id
        block = self.ledger.check_block(merchant_id, self.job.store_code, cooldown_seconds)
        if block is not None and not block.retest:
            self.outcome.blocked = block.reason
            since = f"{block.blocked_at:%Y-%m-%d %H:%M:%S %Z}"
            self._fail_rest(
                changes, "configuration", f"store blocked since {since}: {block.reason}"
            )
            metrics.add_metric(name="LabelsBlocked", unit=MetricUnit.Count, value=len(changes))
            return
        upserts = [c for c in changes if c.record is not None]
        deletes = [c for c in changes if c.record is None]
        try:
            for kind in (upserts, deletes):
                for batch in batched(kind, batch_size):
                    self._apply(list(batch))
        except HipoinkConfigError as error:
            self.ledger.block_store(merchant_id, self.job.store_code, str(error), cooldown_seconds)
            self.outcome.blocked = str(error)
            self._fail_rest(changes, "configuration", str(error))
            metrics.add_metric(name="HipoinkConfigErrors", unit=MetricUnit.Count, value=1)
            logger.error(
                "Hipoink refused the store's configuration; store blocked",
                merchant_id=merchant_id,
                store_code=self.job.store_code,
                error=str(error),
                retry_after_seconds=cooldown_seconds,
            )
            return
        except Exception as error:  # retried (RETRIED), or the sender's own parts failed
            if isinstance(error, RETRIED):
                self._fail_rest(changes, "retryable", str(error))
            if block is not None:
                self._end_retest(block, error)
            raise
        if block is not None:
            self._end_retest(block)

    def _end_retest(self, block: StoreBlock, error: Exception | None = None) -> None:
        """Passed if Hipoink took a call. One cut short before (a 503, a timeout, too little
        time, the ledger failing before the first acknowledgement) says nothing: the block
        stands, its re-test due now, so the SQS retry re-tests rather than park the job's
        labels as ``configuration`` for another cool-down."""
        merchant_id = self.job.merchant_id
        if error is None or self.settled:
            self.ledger.unblock_store(merchant_id)
            logger.info("store re-test passed; store unblocked", merchant_id=merchant_id)
            return
        self.ledger.block_store(merchant_id, block.store_code, block.reason, 0)
        logger.warning(
            "store re-test cut short; the next job re-tests",
            merchant_id=merchant_id,
            store_code=block.store_code,
            error=str(error),
        )

    def _apply(self, batch: list[_Change]) -> None:
        """Send one batch of one kind; a refused batch is halved until the culprits are alone."""
        store_code, merchant_id = self.job.store_code, self.job.merchant_id
        if self.before_call is not None:
            self.before_call()
        try:
            if batch[0].record is not None:
                self.sink.upsert(store_code, [c.record for c in batch if c.record is not None])
            else:
                self.sink.delete(store_code, [c.pc for c in batch])
        except HipoinkRecordError as error:
            if len(batch) > 1:
                middle = len(batch) // 2
                self._apply(batch[:middle])
                self._apply(batch[middle:])
                return
            refused = LabelAck(batch[0].pc, label_hash(batch[0].record), self.job.version)
            failure = LabelFailure(batch[0].pc, "bad_record", str(error), refused)
            self.ledger.record_failures(merchant_id, [failure], store_code=self.job.store_code)
            self.outcome.rejected.append(batch[0].pc)
            self.settled += 1
            return
        self.ledger.acknowledge(
            merchant_id,
            [LabelAck(c.pc, label_hash(c.record), self.job.version) for c in batch],
            store_code=self.job.store_code,
        )
        if batch[0].record is not None:
            self.outcome.upserted += len(batch)
        else:
            self.outcome.deleted += len(batch)
        self.settled += len(batch)

    def _fail_rest(self, changes: list[_Change], failure_class: str, message: str) -> None:
        """Name the failure on every label this job leaves unsent (stale until healed)."""
        self.ledger.record_failures(
            self.job.merchant_id,
            [LabelFailure(c.pc, failure_class, message) for c in changes[self.settled :]],
        )


FAILED = "label job failed; back to its queue"  # SQS retries what it left unacknowledged
RETRIED = (HipoinkRetryable, OutOfTime, TransientConflict)
"""The failures SQS retries as designed (Hipoink; time; contention in the ledger, counted by
the batch): their line is a warning, their labels named."""
_ERROR_MAX_CHARS = 500


def _report(outcome: DeliveryOutcome, error: Exception | None = None) -> None:
    """One line a job: ``label job delivered``, ``label job not (fully) delivered`` (the
    store is blocked), or :data:`FAILED` with the error's class and message. A failure SQS
    retries as designed (Hipoink unavailable or slow, too little time left) is a warning:
    its end is the dead-letter alarm. Any other (the ledger's Postgres, a bug) is an error,
    with its traceback. A Hipoink error's message never holds the sign
    (:func:`esl_sync.hipoink.client.said`). The metrics count what was acknowledged."""
    facts: dict[str, Any] = {
        "merchant_id": outcome.merchant_id,
        "store_code": outcome.store_code,
        "upserted": outcome.upserted,
        "deleted": outcome.deleted,
        "skipped": outcome.skipped,
        "version": outcome.version,
        "skipped_older": len(outcome.skipped_older),
        "skipped_older_codes": outcome.skipped_older[:_LOGGED_CODES],
        "rejected": len(outcome.rejected),
        "rejected_codes": first_named(outcome.rejected, _LOGGED_CODES),
        "refused_before": outcome.refused_before,
        "blocked": outcome.blocked,
        "latency_seconds": outcome.latency_seconds,
    }
    if error is None:
        done = (
            "label job delivered" if outcome.blocked is None else "label job not (fully) delivered"
        )
        logger.info(done, **facts)
    else:
        facts |= {"error_class": type(error).__name__, "error": str(error)[:_ERROR_MAX_CHARS]}
        if isinstance(error, RETRIED):
            logger.warning(FAILED, **facts)
        else:
            logger.error(FAILED, exc_info=error, **facts)
    if outcome.latency_seconds is not None:
        # Clover's clock against ours: the skew is seconds at most, the latency minutes.
        metrics.add_metric(
            name="LabelDeliveryLatency", unit=MetricUnit.Seconds, value=outcome.latency_seconds
        )
    metrics.add_metric(name="LabelsUpserted", unit=MetricUnit.Count, value=outcome.upserted)
    metrics.add_metric(name="LabelsDeleted", unit=MetricUnit.Count, value=outcome.deleted)
    metrics.add_metric(name="LabelsRejected", unit=MetricUnit.Count, value=len(outcome.rejected))
    metrics.add_metric(
        name="LabelsSkippedOlder", unit=MetricUnit.Count, value=len(outcome.skipped_older)
    )
