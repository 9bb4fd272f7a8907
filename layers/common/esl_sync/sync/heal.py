"""Self-healing: queue again the labels that stayed stale.

A label stays stale when its job was dead-lettered, acknowledged while the store was
blocked, or lost any other way. Once it has been stale for ``LABEL_HEAL_AFTER_SECONDS``
(counted from the product's change or the label's last failure, so jobs still in flight
are left alone and a store that keeps failing is tried once per period), its record is
rebuilt from the product row and queued like a poll would; a code Hipoink still holds but
no product wants gets a delete. A record Hipoink refused is sent again only once its
product changes. The queued jobs are ordinary label jobs: the ledger drops what Hipoink
has meanwhile acknowledged, and on a blocked store they serve as its re-test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta

from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.settings import Settings
from esl_sync.store.interfaces import LabelLedger, LabelQueue, Merchant
from esl_sync.sync.labels import LabelPlan, label_target


@dataclass
class HealOutcome:
    merchant_id: str
    upserts: int = 0
    deletes: int = 0
    jobs: int = 0


def heal_merchant(
    merchant: Merchant,
    ledger: LabelLedger,
    queue: LabelQueue,
    settings: Settings,
    *,
    stale_for: timedelta | None = None,
) -> HealOutcome:
    """Queue label jobs for one merchant's long-stale labels; ``stale_for`` overrides
    ``LABEL_HEAL_AFTER_SECONDS`` (the CLI's ``--older-than``)."""
    outcome = HealOutcome(merchant.merchant_id)
    if not merchant.store_code:
        return outcome
    age = timedelta(seconds=settings.label_heal_after_seconds) if stale_for is None else stale_for
    repairs = ledger.repairs(merchant.merchant_id, age)
    plan = LabelPlan()
    for product in repairs.upserts:
        record = label_target(product, settings).record
        if record is not None:
            plan.upserts[record["pc"]] = record
    plan.deletes.update(repairs.deletes)
    jobs = plan.jobs(merchant.merchant_id, merchant.store_code, settings.hipoink_batch_size)
    queue.send(jobs)
    outcome.upserts = len(plan.upserts)
    outcome.deletes = len(plan.deletes - plan.upserts.keys())
    outcome.jobs = len(jobs)
    if jobs:
        logger.info("stale labels queued again", **asdict(outcome))
    metrics.add_metric(
        name="LabelsHealed", unit=MetricUnit.Count, value=outcome.upserts + outcome.deletes
    )
    return outcome
