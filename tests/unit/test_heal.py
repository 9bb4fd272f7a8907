"""The self-healing pass: stale labels become ordinary label jobs again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal

from esl_sync.messages import LabelJob
from esl_sync.products import Product
from esl_sync.settings import Settings
from esl_sync.store.interfaces import LabelRepairs, Merchant
from esl_sync.sync.heal import heal_merchant


class Ledger:
    def __init__(self, repairs: LabelRepairs) -> None:
        self._repairs = repairs
        self.asked: list[timedelta] = []

    def repairs(self, merchant_id: str, stale_for: timedelta) -> LabelRepairs:
        self.asked.append(stale_for)
        return self._repairs


class Queue:
    def __init__(self) -> None:
        self.jobs: list[LabelJob] = []

    def send(self, jobs: Sequence[LabelJob]) -> None:
        self.jobs.extend(jobs)


def _product(pc: str) -> Product:
    return Product(
        merchant_id="M", source_id=f"ID{pc}", name=f"Item {pc}", barcode=pc, price=Decimal(1)
    )


MERCHANT = Merchant("M", "STORE-M")


def test_stale_products_and_unwanted_codes_are_queued_in_batches() -> None:
    repairs = LabelRepairs([_product(f"P{i}") for i in range(5)], ["OLD1", "OLD2"])
    ledger, queue = Ledger(repairs), Queue()
    settings = Settings(hipoink_batch_size=2, hipoink_extra_fields=(("f1", "price_type"),))

    outcome = heal_merchant(MERCHANT, ledger, queue, settings)  # type: ignore[arg-type]

    assert (outcome.upserts, outcome.deletes, outcome.jobs) == (5, 2, 4)
    assert [len(j.upserts) for j in queue.jobs] == [2, 2, 1, 0]
    assert queue.jobs[-1].deletes == ["OLD1", "OLD2"]
    assert {j.store_code for j in queue.jobs} == {"STORE-M"}
    assert queue.jobs[0].upserts[0] == {
        "pc": "P0",
        "pn": "Item P0",
        "pp": "1.00",
        "pi": "IDP0",
        "f1": "FIXED",
    }
    assert ledger.asked == [timedelta(seconds=settings.label_heal_after_seconds)]


def test_a_code_some_product_shows_is_not_deleted() -> None:
    queue = Queue()
    heal_merchant(
        MERCHANT,
        Ledger(LabelRepairs([_product("A")], ["A"])),  # type: ignore[arg-type]
        queue,
        Settings(),
        stale_for=timedelta(0),
    )
    assert [(j.upserts[0]["pc"] if j.upserts else None, j.deletes) for j in queue.jobs] == [
        ("A", [])
    ]


def test_nothing_to_heal_or_no_store_queues_nothing() -> None:
    queue = Queue()
    heal_merchant(MERCHANT, Ledger(LabelRepairs([], [])), queue, Settings())  # type: ignore[arg-type]
    heal_merchant(
        Merchant("M", None),
        Ledger(LabelRepairs([_product("A")], [])),  # type: ignore[arg-type]
        queue,
        Settings(),
    )
    assert queue.jobs == []
