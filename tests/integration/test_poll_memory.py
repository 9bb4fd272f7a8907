"""What a poll holds in memory: one page of Clover's items at a time, whatever the catalog.

A poll's memory grows with the catalog only where the label decision needs it (the codes
touched, their records and owners: README, "Memory"); the items of a page, their rows and
their changes are written and let go before the next page is read. Watched here through
the real handlers, Postgres and the Clover simulator: each page's items are handed to the
poll as dicts a weak reference can watch, and at every request of the listing the test
counts the items of earlier pages still alive.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from devkit.catalog import convenience_store_catalog
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.clover.transform import to_product
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.ports import CatalogReader, CatalogReaders
from esl_sync.records import ItemPage, Merchant, ProductRow
from esl_sync.store.pg_connection import CountingCursor
from esl_sync.store.postgres import Database, PostgresMerchantDirectory
from esl_sync.store.schema import apply_migrations
from esl_sync.sync.item_rows import product_row


class _Watched(dict[str, Any]):
    """A raw item as the parser makes it, but one a weak reference can watch."""


class _Watch:
    """The process's Clover readers, each page's items handed on as :class:`_Watched`;
    ``alive`` holds, at each list request, the items of earlier pages still referenced."""

    def __init__(self, real: CatalogReaders) -> None:
        self.real = real
        self.refs: list[weakref.ref[_Watched]] = []
        self.alive: list[int] = []

    def merchant(self, *args: Any, **kwargs: Any) -> CatalogReader:
        return _WatchedReader(self.real.merchant(*args, **kwargs), self)


class _WatchedReader:
    def __init__(self, real: CatalogReader, watch: _Watch) -> None:
        self._real, self._watch = real, watch

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def list_page(self, params: Sequence[tuple[str, str]]) -> ItemPage:
        self._watch.alive.append(sum(ref() is not None for ref in self._watch.refs))
        page = self._real.list_page(params)
        elements = [_Watched(element) for element in page.elements]
        self._watch.refs += [weakref.ref(element) for element in elements]
        return replace(page, elements=elements)


def test_a_first_sync_lets_each_page_of_items_go_before_it_reads_the_next(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    with LocalStack(settings={"CLOVER_PAGE_SIZE": "10"}) as stack:
        stack.add_merchant("MPAGES000001", "tok", "STORE-P", items=convenience_store_catalog(45))
        watches: list[_Watch] = []
        real_deps = runtime.poll_deps

        def watched_deps() -> Any:
            deps = real_deps()
            watches.append(_Watch(deps.clover))
            return replace(deps, clover=watches[-1])

        monkeypatch.setattr(runtime, "poll_deps", watched_deps)
        cycle = stack.run_cycle()

        assert (cycle.polls.records, cycle.polls.failures) == (1, 0)
        (watch,) = [w for w in watches if w.refs]
        assert len(watch.refs) == 45  # five pages read: 10, 10, 10, 10, 5
        assert len(watch.alive) == 5  # the shorter page is the last: no sixth request
        assert watch.alive == [0, 0, 0, 0, 0]  # no earlier page held while one is read
        assert len(stack.products("MPAGES000001")) == 45


def _row(n: int, *, price: int | None = None) -> ProductRow:
    raw = {"id": f"ITEMOWN{n:05d}", "name": f"Item {n}", "price": price or 100 + n}
    product = to_product({**raw, "sku": f"OWN-{n}"}, merchant_id=OWNERS_M)
    return product_row(product, label_hash(to_record(product)))


OWNERS_M = "MOWNERS00001"


def test_the_owners_read_back_holds_no_reader_or_dict_of_its_own_per_code(
    database_url: str,
) -> None:
    """A first sync reads back an owner for every code it touched and holds them till its
    jobs are sent: each is a few slots (no instance dict), all share one reader of their
    products, and a product is still read only when asked for, once, as stored."""
    apply_migrations(database_url)
    db = Database(database_url)
    try:
        PostgresMerchantDirectory(db).save(Merchant(OWNERS_M, "S-OWNERS"))
        with db.transaction(None) as tx:
            tx.upsert(OWNERS_M, [_row(n) for n in range(50)])
            owners = tx.label_owners(OWNERS_M, [f"OWN-{n}" for n in range(50)]).owners
            assert len(owners) == 50
            assert not any(hasattr(owner, "__dict__") for owner in owners.values())
            assert len({id(owner._read) for owner in owners.values()}) == 1  # one, shared
            statements = CountingCursor.statements
            milk = owners["OWN-7"].product  # read now, in the transaction that asked
            assert owners["OWN-7"].product is milk  # and once
            assert CountingCursor.statements == statements + 1
            assert (milk.key, milk.name, milk.price) == (
                ("ITEMOWN00007", ""),
                "Item 7",
                Decimal("1.07"),
            )
    finally:
        db.close()


def test_a_change_is_keyed_by_its_rows_own_key_not_a_copy_from_the_answer(
    database_url: str,
) -> None:
    """The label plan keeps the key of every product a first sync changed until its jobs
    are sent: the changes share the rows' keys (the item's id as read) rather than each
    holding a copy of it built from Postgres's answer."""
    apply_migrations(database_url)
    db = Database(database_url)
    try:
        PostgresMerchantDirectory(db).save(Merchant(OWNERS_M, "S-OWNERS"))
        rows = [_row(n) for n in range(20)]
        with db.transaction(None) as tx:
            changes = tx.upsert(OWNERS_M, rows)
        by_key = {row.key: row for row in rows}
        assert sorted(change.key for change in changes) == sorted(by_key)
        assert all(change.key is by_key[change.key].key for change in changes)
        with db.transaction(None) as tx:  # again, with a new price: the same, as an update
            again = [_row(n, price=500 + n) for n in range(20)]
            updated = tx.upsert(OWNERS_M, again)
        by_key = {row.key: row for row in again}
        assert {change.previous_barcode for change in updated} == {f"OWN-{n}" for n in range(20)}
        assert all(change.key is by_key[change.key].key for change in updated)
    finally:
        db.close()
