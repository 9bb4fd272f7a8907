"""Label delivery under disorder: an operator's heal racing a poll, held-back and replayed
jobs, dead letters and redrives never put an older value back on a shelf (real handlers,
moto, Postgres, both simulators)."""

from __future__ import annotations

import pytest

from devkit.demo import expected_labels
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync.records import RepairSnapshot
from esl_sync.store.label_ledger import PostgresLabelLedger

MAX_RECEIVES = int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])


def test_an_operators_heal_racing_a_poll_never_lets_an_older_job_of_its_version_back(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``esl-sync heal`` holds no lease: it read the label clock, then the stale labels with
    their products, in two statements. A poll committing in between made the pass queue the
    poll's new value under the clock of before, the version of an older job whose value
    differed; delivered first (the poll's own job dead-lettered), it let that older job,
    redriven, back on the shelf: equal versions are one decision, so the older value was
    sent over the newer."""
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    merchant, store = "MRACE0000001", "STORE-RACE"
    stack.add_merchant(merchant, "tok", store, items=[{"name": "Cola", "price": 100, "sku": "C"}])
    item = clover.items(merchant)[0]

    def poll() -> None:
        stack.cli("poll", merchant)
        assert stack.drain("PollQueue", "poller").failures == 0

    poll()
    stack.drain("LabelQueue", "hipoink_sender")
    # 2.00 is decided while Hipoink is down: its job is dead-lettered.
    hipoink.down_stores.add(store)
    clover.update_item(merchant, item["id"], price=200)
    poll()
    stack.drain("LabelQueue", "hipoink_sender")
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 1

    # The operator heals while a poll (of 3.00) commits between the pass's two readings.
    clover.update_item(merchant, item["id"], price=300)
    original = PostgresLabelLedger.repair_candidates
    raced: list[bool] = []

    def racing(self: PostgresLabelLedger, merchant_id: str) -> RepairSnapshot:
        if not raced:
            raced.append(True)
            poll()
        return original(self, merchant_id)

    monkeypatch.setattr(PostgresLabelLedger, "repair_candidates", racing)
    stack.cli("heal", merchant, "--older-than", "0")
    monkeypatch.setattr(PostgresLabelLedger, "repair_candidates", original)
    assert raced

    # The poll's job (first in the store's group) fails until it is dead-lettered; Hipoink
    # answers again for the heal's job behind it. Then the operator redrives.
    hipoink.down_stores.discard(store)
    hipoink.fail_next(503, MAX_RECEIVES)
    stack.drain("LabelQueue", "hipoink_sender", batch_size=1)
    assert stack.queue_depths()["LabelDeadLetterQueue"] == 2
    assert hipoink.labels(store)["C"]["pp"] == "3.00"
    stack.cli("redrive", "--queue", "label")
    stack.drain("LabelQueue", "hipoink_sender")

    assert [r["pp"] for r in hipoink.upserts_of(store, "C")] == ["1.00", "3.00"]
    assert hipoink.labels(store) == expected_labels(clover.items(merchant))
