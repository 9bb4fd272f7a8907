"""Self-healing: queue again the labels that failed or stayed stale.

A label stays stale when its job was dead-lettered (Hipoink down past the queue's receive
limit, or skipped behind such a job in its store's FIFO group), acknowledged while the
store was blocked, or lost any other way. Its record is rebuilt from the product row (the
product the label shows: see :mod:`esl_sync.sync.labels`) and queued like a poll would; a
code Hipoink still holds but no product wants gets a delete. A record Hipoink refused is
sent again only once its product changes. The queued jobs are ordinary label jobs with a
version (:attr:`esl_sync.messages.LabelJob.version`): the ledger drops what Hipoink has
meanwhile acknowledged, a newer decision always outranks them, and on a blocked store they
serve as its re-test.

Two ways in (:func:`choose` decides, from one reading of the ledger):

* **after a poll** (:func:`heal_after_poll`), when the merchant has labels whose delivery
  failed for a reason a retry cures (the merchant lookup counts them, so a healthy store
  pays nothing), or on a sweep poll:

  - while Hipoink still fails for the store (its newest failure is newer than anything
    it acknowledged), a *probe*: one batch of the failed labels, at most once per
    ``PROBE_SPACING`` of the poll interval after the last failure and never while an
    earlier one waits for its first attempt. In AWS the store's FIFO group holds later
    jobs behind a failing one, so a store that stays down sees one Hipoink call per
    receive of that job, however many polls pass;
  - once Hipoink has answered the store after its last failure, every stale label whose
    job is settled (it went stale before that answer: in the store's FIFO order its job
    came first) and was not queued again since, up to ``LABEL_HEAL_PER_POLL``. With the
    shipped settings a store is repaired within three polls of Hipoink's return: the probe
    goes out on the first or second, the rest on the next;
  - on sweep polls also every label stale for longer than ``LABEL_HEAL_AFTER_SECONDS``
    (counted from the product's change or the label's last failure);
  - every label a verify found drifted (:mod:`esl_sync.sync.verify`: Hipoink holds
    otherwise than it acknowledged) and that was not queued again since: at once, not
    probed, since Hipoink answered the verify;
  - and after a sweep poll, a verify of the merchant's labels, queued behind the poll's
    and the pass's jobs, at most once per ``LABEL_VERIFY_INTERVAL_HOURS``.

  The poll holds the merchant's lease, so no product write runs meanwhile: the pass
  advances the label clock under the lease's fence (refused, and nothing queued, once a
  newer poll of the merchant has written) and its jobs outrank every earlier decision.
* **by the operator** (``esl-sync heal``, ``resync``): labels stale for longer than
  ``--older-than``; no lease, so the jobs carry the clock's committed value, read with
  the ledger and the products in one statement: a poll committing meanwhile outranks
  them, and their version's jobs all carry the same values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from esl_sync.messages import LabelVerify
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import LabelLedger, LabelQueue
from esl_sync.records import Fence, Merchant, RepairCandidate, RepairSnapshot
from esl_sync.settings import Settings
from esl_sync.sync.labels import LabelPlan, label_target
from esl_sync.verify_ports import PollLedger

RETRY_CLASSES = frozenset({"retryable", "configuration"})
"""Failures that sending again can cure (a refused record waits for its product to change)."""
DRIFT = "drift"
"""A label a verify found Hipoink holding otherwise than it acknowledged."""
HEALED_CLASSES = RETRY_CLASSES | {DRIFT}
"""The failures the poll's merchant lookup counts (``labels_failing``): its cue to heal."""
_LOGGED_CODES = 20
PROBE_SPACING = 0.8
"""Share of the poll interval that must pass after a store's last failure before a poll
probes it again: below one interval, so the probe is never a poll late (polls drift by
seconds), which keeps the three-poll promise."""


@dataclass(frozen=True)
class RepairPolicy:
    """Which stale labels a pass queues again (see the module docstring)."""

    older_than: timedelta | None = None  # stale for longer than this: queued
    retry: bool = False  # labels whose delivery failed: probe, or all once Hipoink answers
    limit: int | None = None  # most labels per pass
    probe_size: int = 1
    probe_after: timedelta = timedelta(0)  # after the store's last failure
    requeue_expiry: timedelta = timedelta(0)  # a queued label not tried by then is lost


@dataclass(frozen=True)
class Choice:
    chosen: list[RepairCandidate]
    mode: str = ""  # what the retry found: recovered | probe | probe in flight | backing off


@dataclass
class HealOutcome:
    merchant_id: str
    upserts: int = 0
    deletes: int = 0
    jobs: int = 0
    mode: str = ""
    version: int | None = None
    codes: list[str] = field(default_factory=list)  # the first few queued, for the log


def choose(snapshot: RepairSnapshot, policy: RepairPolicy) -> Choice:
    """The stale labels to queue again now (pure: the caller read the ledger)."""
    now = snapshot.now
    usable = [c for c in snapshot.candidates if not _refused(c)]
    picked: dict[str, RepairCandidate] = {}
    if policy.older_than is not None:
        cutoff = now - policy.older_than
        picked.update((c.pc, c) for c in usable if _stale_at(c) < cutoff)
    mode = ""
    if policy.retry:
        mode, retried = _retry(snapshot, usable, policy)
        for candidate in retried:
            picked.setdefault(candidate.pc, candidate)
    # Failed labels last: if the limit cuts, they keep the merchant counted as failing, so
    # the next poll carries on.
    chosen = sorted(picked.values(), key=lambda c: (c.failure_class in RETRY_CLASSES, c.pc))
    return Choice(chosen if policy.limit is None else chosen[: policy.limit], mode)


def _retry(
    snapshot: RepairSnapshot, usable: list[RepairCandidate], policy: RepairPolicy
) -> tuple[str, list[RepairCandidate]]:
    """The outage's retry (:func:`_outage`), and the drifted labels not queued since."""
    now, expiry = snapshot.now, policy.requeue_expiry
    drifted = [c for c in usable if c.failure_class == DRIFT and not _queued(c, now, expiry)]
    mode, retried = _outage(snapshot, usable, policy)
    return mode or ("drift" if drifted else ""), retried + drifted


def _queued(candidate: RepairCandidate, now: datetime, expiry: timedelta) -> bool:
    """Queued again since it went stale, and not so long ago that its job must be lost."""
    queued = candidate.requeued_at
    return queued is not None and queued >= _stale_at(candidate) and queued > now - expiry


def _outage(
    snapshot: RepairSnapshot, usable: list[RepairCandidate], policy: RepairPolicy
) -> tuple[str, list[RepairCandidate]]:
    now = snapshot.now
    failing = [c for c in usable if c.failure_class in RETRY_CLASSES]
    if not failing:
        return "", []
    last_failure = max(c.failed_at or now for c in failing)

    def in_flight(candidate: RepairCandidate) -> bool:
        """Queued again (:func:`_queued`), and since the store's last failure (a job that
        failed, or was skipped behind a failing one, ends that)."""
        queued = candidate.requeued_at
        return (
            _queued(candidate, now, policy.requeue_expiry)
            and queued is not None
            and queued > last_failure
        )

    if snapshot.last_ack is not None and snapshot.last_ack > last_failure:
        settled_before = snapshot.last_ack
        return "recovered", [
            c for c in usable if _stale_at(c) < settled_before and not in_flight(c)
        ]
    if any(in_flight(c) for c in failing):
        return "probe in flight", []
    if last_failure > now - policy.probe_after:
        return "backing off", []
    probe = sorted(failing, key=lambda c: (c.failed_at or now, c.pc))[: policy.probe_size]
    return "probe", probe


def _stale_at(candidate: RepairCandidate) -> datetime:
    """When the label last went wrong: its product changed, or its delivery failed."""
    moments = [m for m in (candidate.since, candidate.failed_at) if m is not None]
    return max(moments) if moments else datetime.min.replace(tzinfo=UTC)


def _refused(candidate: RepairCandidate) -> bool:
    """Hipoink refused this very record: not sent again until its product changes."""
    return (
        candidate.failure_class == "bad_record"
        and candidate.failed_at is not None
        and candidate.since is not None
        and candidate.failed_at >= candidate.since
    )


def heal_after_poll(
    merchant: Merchant,
    ledger: PollLedger,
    queue: LabelQueue,
    settings: Settings,
    *,
    swept: bool,
    fence: Fence | None = None,
) -> HealOutcome | None:
    """The pass a successful poll runs (it holds the merchant's lease, whose ``fence`` its
    clock advance carries: FenceRefused, nothing queued, once a newer poll has written);
    nothing at all for a merchant without failed labels, unless the poll swept. After a
    sweep, the verify of the merchant's labels is queued too when it is due."""
    if not swept and not merchant.labels_failing:
        return None
    interval = timedelta(seconds=settings.clover_sync_interval_seconds)
    heal_after = timedelta(seconds=settings.label_heal_after_seconds)
    policy = RepairPolicy(
        older_than=heal_after if swept else None,
        retry=True,
        limit=settings.label_heal_per_poll,
        probe_size=min(settings.hipoink_batch_size, settings.label_heal_per_poll),
        probe_after=interval * PROBE_SPACING,
        requeue_expiry=heal_after,
    )
    outcome = _repair(merchant, ledger, queue, settings, policy, in_lease=True, fence=fence)
    if swept:
        queue_verify_if_due(merchant, ledger, queue, settings)
    return outcome


def queue_verify_if_due(
    merchant: Merchant, ledger: PollLedger, queue: LabelQueue, settings: Settings
) -> bool:
    """Queue a verify of the merchant's labels (:mod:`esl_sync.sync.verify`) unless one was
    queued within ``LABEL_VERIFY_INTERVAL_HOURS`` (0: never automatically); whether queued.
    Its place in the merchant's message group, after this poll's jobs and the heal's,
    means it compares a settled ledger."""
    hours = settings.label_verify_interval_hours
    if not hours or not merchant.store_code or not ledger.claim_verify(merchant.merchant_id, hours):
        return False
    queue.send(
        [
            LabelVerify(
                merchant_id=merchant.merchant_id, store_code=merchant.store_code, reason="sweep"
            )
        ]
    )
    logger.info("label verify queued", merchant_id=merchant.merchant_id)
    return True


def heal_merchant(
    merchant: Merchant,
    ledger: LabelLedger,
    queue: LabelQueue,
    settings: Settings,
    *,
    stale_for: timedelta | None = None,
) -> HealOutcome:
    """The operator's pass: labels stale for longer than ``stale_for`` (default
    ``LABEL_HEAL_AFTER_SECONDS``; the CLI's ``--older-than``)."""
    age = timedelta(seconds=settings.label_heal_after_seconds) if stale_for is None else stale_for
    return _repair(merchant, ledger, queue, settings, RepairPolicy(older_than=age), in_lease=False)


def _repair(
    merchant: Merchant,
    ledger: LabelLedger,
    queue: LabelQueue,
    settings: Settings,
    policy: RepairPolicy,
    *,
    in_lease: bool,
    fence: Fence | None = None,
) -> HealOutcome:
    merchant_id = merchant.merchant_id
    outcome = HealOutcome(merchant_id)
    if not merchant.store_code:
        return outcome
    # Without the lease a poll may commit at any moment: the clock comes with the ledger
    # and the products in one reading, so what a poll decided meanwhile outranks this pass,
    # and this pass's version carries that version's values only. (Read before the ledger,
    # in a statement of its own, a poll committing in between made the pass send the poll's
    # new value under the version of an older job that showed another: delivered first, it
    # let that older job, redriven, back on the shelf, equal versions being one decision.)
    snapshot = ledger.repair_candidates(merchant_id)
    choice = choose(snapshot, policy)
    outcome.mode = choice.mode
    plan = LabelPlan()
    for candidate in choice.chosen:
        if candidate.product is None:
            plan.deletes.add(candidate.pc)
        elif record := label_target(candidate.product, settings).record:
            plan.upserts[record["pc"]] = record
    if not plan.empty:
        plan.version = (
            ledger.advance_label_clock(merchant_id, fence=fence) if in_lease else snapshot.clock
        )
        jobs = plan.jobs(merchant_id, merchant.store_code, settings.hipoink_batch_size)
        queue.send(jobs)
        outcome.jobs, outcome.version = len(jobs), plan.version
    outcome.upserts = len(plan.upserts)
    outcome.deletes = len(plan.deletes - plan.upserts.keys())
    queued = sorted(plan.upserts.keys() | plan.deletes)
    outcome.codes = queued[:_LOGGED_CODES]
    failing_seen = sum(c.failure_class in HEALED_CLASSES for c in snapshot.candidates)
    moot = policy.retry and merchant.labels_failing > failing_seen  # fixed since they failed
    if queued or moot:
        ledger.mark_requeued(
            merchant_id, queued, clear_failures_before=snapshot.now if moot else None
        )
    _report(outcome)
    return outcome


def _report(outcome: HealOutcome) -> None:
    if outcome.jobs:
        logger.info("stale labels queued again", **asdict(outcome))
    elif outcome.mode in ("probe in flight", "backing off"):
        logger.info("labels failing; waiting before the next retry", **asdict(outcome))
    metrics.add_metric(
        name="LabelsHealed", unit=MetricUnit.Count, value=outcome.upserts + outcome.deletes
    )
