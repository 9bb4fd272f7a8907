"""A model of label delivery under disorder: Hypothesis plays edits, polls, held-back and
duplicated jobs, Hipoink outages (dead letters), redrives, heals and replays against the
real stack (handlers, moto, Postgres, both simulators), and checks after every step that
no code's label ever went back to an older value, that the ledger never believes a label
shows what it does not (that would be a silent loss), and, once everything settles as an
operator and the schedule settle it, that the shelf is Clover's catalog.

One local stack serves every example; each example gets a merchant and store of its own
and leaves its queues empty. Values are unique per edit, so the age of whatever Hipoink
ever showed under a code is known from the record alone.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from devkit.demo import expected_labels
from devkit.hipoink_sim import HipoinkSimulator
from devkit.lambda_runner import LambdaContext
from devkit.local_stack import LocalStack
from devkit.template import load_template
from esl_sync.hipoink.records import label_hash
from esl_sync.records import RepairSnapshot
from esl_sync.store.label_ledger import PostgresLabelLedger
from tests.strategies import model_settings

ITEMS = 5
MAX_RECEIVES = int(load_template()["Parameters"]["MaxReceiveCount"]["Default"])
INTERVAL_MINUTES = 5  # the shipped SyncIntervalSeconds
_examples = itertools.count(1)


def _minutes_pass(stack: LocalStack, merchant_id: str, minutes: float) -> None:
    """Every moment of this merchant the label logic compares with ``now()`` moves back
    (to the code, that much time passes); as in test_label_safety."""
    shift = f"{minutes * 60} seconds"
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE label_state SET acknowledged_at = acknowledged_at - %(s)s::interval,"
            " failed_at = failed_at - %(s)s::interval,"
            " requeued_at = requeued_at - %(s)s::interval WHERE merchant_id = %(m)s",
            {"s": shift, "m": merchant_id},
        )
        conn.execute(
            "UPDATE products SET updated_at = updated_at - %(s)s::interval,"
            " created_at = created_at - %(s)s::interval WHERE merchant_id = %(m)s",
            {"s": shift, "m": merchant_id},
        )


def _take_all(stack: LocalStack, queue: str) -> list[str]:
    """Every body waiting on ``queue``, removed from it (oldest first)."""
    url, bodies = stack.urls[queue], []
    while got := stack.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
    ).get("Messages", []):
        for message in got:
            bodies.append(message["Body"])
            stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


class DeliveryModel(RuleBasedStateMachine):
    stack: LocalStack  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        n = next(_examples)
        self.merchant = f"MDLV{n:08d}{uuid.uuid4().hex[:1].upper()}"
        self.store = f"STORE-DLV-{n}-{uuid.uuid4().hex[:6]}"
        self.clover, self.hipoink = self.stack.clover, self.stack.hipoink
        assert self.clover is not None
        assert self.hipoink is not None
        self.values = itertools.count(1)
        # pc -> every label Clover ever called for, oldest first: (name, price), or None
        # while no item shows the code. A value's age is its index (each value is unique).
        self.history: dict[str, list[tuple[str, str] | None]] = {}
        self.held: list[str] = []  # jobs taken off the queue, to be delivered later
        self.queued: list[str] = []  # jobs on the label queue
        self.seen: list[str] = []  # every job body that ever was on the label queue
        items = [
            {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"SKU{i}"}
            for i in range(ITEMS)
        ]
        self.stack.add_merchant(self.merchant, "tok", self.store, items=items)
        self.ids = {item["sku"]: item["id"] for item in self.clover.items(self.merchant)}
        self._note_catalog()
        self._poll()
        self._deliver()

    # -- helpers ---------------------------------------------------------------------------

    @property
    def sim(self) -> HipoinkSimulator:
        assert self.hipoink is not None
        return self.hipoink

    def _note_catalog(self) -> None:
        assert self.clover is not None
        wanted = expected_labels(self.clover.items(self.merchant))
        for pc in self.ids:
            record = wanted.get(pc)
            value = None if record is None else (record["pn"], record["pp"])
            seen = self.history.setdefault(pc, [])
            if not seen or seen[-1] != value:
                seen.append(value)

    def _poll(self) -> None:
        self.stack.cli("poll", self.merchant)
        assert self.stack.drain("PollQueue", "poller").failures == 0
        self._note_queued()

    def _note_queued(self) -> None:
        """Note the jobs just queued (for replays, and as on their way). They are taken off
        the queue and sent again in order: a receive counts towards the dead-letter limit,
        and only the sender's may."""
        bodies = _take_all(self.stack, "LabelQueue")
        for body in bodies:
            self._send(body)
        self.queued += bodies
        self.seen += [body for body in bodies if body not in self.seen]

    def _deliver(
        self, context: Callable[[str], LambdaContext] | None = None, batch_size: int = 10
    ) -> None:
        """The sender takes the label queue until it is empty (delivered or dead-lettered)."""
        self.stack.drain("LabelQueue", "hipoink_sender", context=context, batch_size=batch_size)
        self.queued.clear()

    def _send(self, body: str) -> None:
        self.stack.sqs.send_message(
            QueueUrl=self.stack.urls["LabelQueue"],
            MessageBody=body,
            MessageGroupId=self.merchant,
            MessageDeduplicationId=uuid.uuid4().hex,
        )

    def _shown(self) -> dict[str, list[tuple[str, str] | None]]:
        """Per code, what Hipoink showed, in order: each upsert's (name, price), and None
        for each delete of a code it held (from the simulator's request log)."""
        upserts = {pc: self.sim.upserts_of(self.store, pc) for pc in self.ids}
        used = dict.fromkeys(self.ids, 0)
        shown: dict[str, list[tuple[str, str] | None]] = {pc: [] for pc in self.ids}
        for request in self.sim.requests:
            if request.store_code != self.store or request.error_code != 0:
                continue
            for pc in request.codes:
                if request.path == "product/create_multiple":
                    record = upserts[pc][used[pc]]
                    used[pc] += 1
                    shown[pc].append((record["pn"], record["pp"]))
                elif request.path == "product/del_multiple":
                    shown[pc].append(None)
        return shown

    # -- rules -----------------------------------------------------------------------------

    @rule(
        codes=st.lists(st.integers(0, ITEMS - 1), min_size=2, max_size=5, unique=True),
        name=st.booleans(),
        hold=st.booleans(),
    )
    def edit_and_poll(self, codes: list[int], name: bool, hold: bool) -> None:
        """Items edited in Clover, then a poll; its jobs either stay on the queue or are
        held back (delivered later, in any order)."""
        assert self.clover is not None
        for i in codes:
            value = next(self.values)
            change = {"name": f"Item {i} v{value}"} if name else {"price": 1000 + value}
            self.clover.update_item(self.merchant, self.ids[f"SKU{i}"], **change)
        self._note_catalog()
        self._poll()
        if hold:
            self.held += _take_all(self.stack, "LabelQueue")
            self.queued.clear()

    @rule(index=st.integers(0, ITEMS - 1))
    def hide_or_show_and_poll(self, index: int) -> None:
        """An item hidden from the register (its label goes), or shown again at a new
        price, then a poll."""
        assert self.clover is not None
        pc = f"SKU{index}"
        if self.history[pc][-1] is None:
            self.clover.update_item(
                self.merchant, self.ids[pc], hidden=False, price=1000 + next(self.values)
            )
        else:
            self.clover.hide_item(self.merchant, self.ids[pc])
        self._note_catalog()
        self._poll()

    @precondition(lambda self: self.queued)
    @rule()
    def deliver(self) -> None:
        self._deliver()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def deliver_held(self, data: st.DataObject) -> None:
        """A held job arrives now, late and perhaps out of order."""
        index = data.draw(st.integers(0, len(self.held) - 1))
        self._send(self.held.pop(index))
        self._deliver()

    @precondition(lambda self: self.seen)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A job that was queued before comes again (at-least-once delivery, an old
        deploy's or a hand's replay)."""
        self._send(data.draw(st.sampled_from(self.seen)))
        self._deliver()

    @rule(data=st.data())
    def legacy_job(self, data: st.DataObject) -> None:
        """A job from before versions, carrying an older value of one code."""
        pc = data.draw(st.sampled_from(sorted(self.history)))
        value = data.draw(st.sampled_from(self.history[pc]))
        job: dict[str, Any] = {"merchant_id": self.merchant, "store_code": self.store}
        if value is None:
            job["deletes"] = [pc]
        else:
            job["upserts"] = [{"pc": pc, "pn": value[0], "pp": value[1], "pi": self.ids[pc]}]
        self._send(json.dumps(job))
        self._deliver()

    @rule(down=st.booleans())
    def hipoink_outage(self, down: bool) -> None:
        """Hipoink goes down (the jobs now on the queue are dead-lettered) or comes back."""
        self.sim.down_stores.discard(self.store)
        if down:
            self.sim.down_stores.add(self.store)
            self._deliver()

    @precondition(lambda self: self.queued)
    @rule(failures=st.integers(1, MAX_RECEIVES + 2), batch=st.sampled_from([1, 10]))
    def hipoink_hiccup(self, failures: int, batch: int) -> None:
        """Hipoink answers a few calls with a 5xx, then works again: a job whose every
        receive failed is dead-lettered, those after it go on (``batch`` jobs a receive)."""
        self.sim.fail_next(500, failures)
        self._deliver(batch_size=batch)
        self.sim.clear_faults()

    @precondition(lambda self: self.queued)
    @rule(calls=st.integers(0, 2))
    def sender_runs_out_of_time(self, calls: int) -> None:
        """Each invocation has time for ``calls`` Hipoink calls (then 10 s are left,
        less than a call may take)."""
        sim = self.sim

        def context(function: str) -> LambdaContext:
            before = sim.request_count()
            return LambdaContext(
                function,
                remaining=lambda: 300_000 if sim.request_count() - before < calls else 10_000,
            )

        self._deliver(context)

    @rule()
    def redrive(self) -> None:
        self.stack.cli("redrive", "--queue", "label")
        self._note_queued()
        self._deliver()

    @rule(minutes=st.sampled_from([1, INTERVAL_MINUTES, 20]))
    def scheduled_poll(self, minutes: int) -> None:
        """Time passes and the schedule polls (the poll heals what failed)."""
        _minutes_pass(self.stack, self.merchant, minutes)
        self._poll()

    @rule(
        racing=st.lists(st.integers(0, ITEMS - 1), max_size=3, unique=True),
    )
    def operator_heal(self, racing: list[int]) -> None:
        """``esl-sync heal --older-than 0``; a poll of ``racing`` items edited in Clover
        commits while it runs (after it started, before it read the stale labels)."""
        assert self.clover is not None
        for i in racing:
            value = next(self.values)
            self.clover.update_item(self.merchant, self.ids[f"SKU{i}"], price=1000 + value)
        self._note_catalog()
        original = PostgresLabelLedger.repair_candidates
        raced: list[bool] = []

        def racing_poll(ledger: PostgresLabelLedger, merchant_id: str) -> RepairSnapshot:
            if racing and not raced:
                raced.append(True)
                self._poll()
            return original(ledger, merchant_id)

        PostgresLabelLedger.repair_candidates = racing_poll  # type: ignore[method-assign]
        try:
            self.stack.cli("heal", self.merchant, "--older-than", "0")
        finally:
            PostgresLabelLedger.repair_candidates = original  # type: ignore[method-assign]
        self._note_queued()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def labels_never_go_back(self) -> None:
        """Each value Hipoink shows is one Clover called for no earlier than the values it
        showed before (a delete may match any absence of the code at or after that)."""
        for pc, shown in self._shown().items():
            history, age = self.history[pc], 0
            for value in shown:
                ages = [i for i, v in enumerate(history) if v == value and i >= age]
                assert ages, (
                    f"{pc}: Hipoink went back to {value} after showing {history[age]}"
                    f" (Clover's values, oldest first: {history}; Hipoink's: {shown})"
                )
                age = ages[0]

    @invariant()
    def the_ledger_believes_only_what_the_shelf_shows(self) -> None:
        """An acknowledged hash is the hash of the label on the shelf: otherwise the label
        is wrong and nothing counts it stale (a silent loss)."""
        shelf = self.sim.labels(self.store)
        for row in self.stack.label_state(self.merchant):
            if row["acknowledged_at"] is None or row["label_hash"] is None:
                continue
            shown = shelf.get(row["pc"])
            assert shown is not None, f"{row['pc']}: acknowledged, not on the shelf"
            assert row["label_hash"] == label_hash(shown), (
                f"{row['pc']}: the ledger holds an acknowledgement of another record than"
                f" the shelf's {shown}"
            )

    @invariant()
    def a_label_left_behind_is_a_named_failure(self) -> None:
        """A label that does not show Clover's value, with no job for it on its way (on
        the label queue or held back), carries a named failure: what ``esl-sync status``
        shows and the heal retries. Dead-lettered jobs count as not on their way."""
        assert self.clover is not None
        wanted = expected_labels(self.clover.items(self.merchant))
        shelf = self.sim.labels(self.store)
        on_the_way: set[str] = set()
        for body in [*self.queued, *self.held]:
            job = json.loads(body)
            on_the_way |= {r["pc"] for r in job.get("upserts", [])} | set(job.get("deletes", []))
        ledger = {row["pc"]: row for row in self.stack.label_state(self.merchant)}
        for pc in self.ids:
            behind = shelf.get(pc) != wanted.get(pc)
            if behind and pc not in on_the_way:
                row = ledger.get(pc)
                assert (row or {}).get("failure_class") is not None, (
                    f"{pc}: shows {shelf.get(pc)}, Clover has {wanted.get(pc)}, no job is on"
                    f" its way and no failure is named ({row})"
                )

    # -- the end: everything settles ---------------------------------------------------------

    def teardown(self) -> None:
        try:
            self._settle()
        finally:
            self.sim.down_stores.discard(self.store)
            self.sim.clear_faults()
            for queue in ("LabelQueue", "LabelDeadLetterQueue", "PollQueue"):
                _take_all(self.stack, queue)
            self.stack.cli("merchants", "disable", self.merchant)

    def _settle(self) -> None:
        """Hipoink is back, every held job arrives, the operator redrives the dead letters,
        and the schedule goes on: within three polls the shelf is Clover's catalog, and no
        label is counted stale."""
        self.sim.down_stores.discard(self.store)
        self.sim.clear_faults()
        for body in self.held:
            self._send(body)
        self.held.clear()
        self._deliver()
        self.stack.cli("redrive", "--queue", "label")
        self._deliver()
        self.labels_never_go_back()
        assert self.clover is not None
        wanted = expected_labels(self.clover.items(self.merchant))
        for _ in range(3):
            if self.sim.labels(self.store) == wanted:
                break
            _minutes_pass(self.stack, self.merchant, INTERVAL_MINUTES)
            self._poll()
            self._deliver()
        self.labels_never_go_back()
        self.the_ledger_believes_only_what_the_shelf_shows()
        assert self.sim.labels(self.store) == wanted
        status = json.loads(self.stack.cli("status", "--json"))
        row = next(r for r in status if r["merchant_id"] == self.merchant)
        assert row["stale_labels"] == 0


def test_label_delivery_under_disorder(stack: LocalStack) -> None:
    DeliveryModel.stack = stack
    run_state_machine_as_test(
        DeliveryModel,
        settings=model_settings(
            "DELIVERY_MODEL_EXAMPLES", 15, 12, HealthCheck.too_slow, HealthCheck.filter_too_much
        ),
    )


# -- found by the model ----------------------------------------------------------------------


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
