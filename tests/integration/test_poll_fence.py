"""The poll lease as a fence, at the store: the lease's token (epoch, generation) taken in
DynamoDB with the lease, and checked by Postgres where the poll's transaction writes (its
product writes and the label clock's advance: migration 0009).

Real Postgres (a fresh database per test) and moto; the transactions that race run on
threads with connections of their own, as two pollers do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.clover.transform import to_product
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.records import Fence, FenceRefused, Merchant, ProductRow, TransientConflict
from esl_sync.store.dynamo import DynamoStateStore
from esl_sync.store.label_ledger import PostgresLabelLedger
from esl_sync.store.postgres import Database, PostgresMerchantDirectory
from esl_sync.store.schema import apply_migrations
from esl_sync.sync.item_rows import product_row

M = "MFENCE000001"
OLD_ADVANCE_CLOCK = """
INSERT INTO label_clocks (merchant_id, version) VALUES (%(m)s, nextval('label_versions'))
ON CONFLICT (merchant_id) DO UPDATE SET version = EXCLUDED.version
RETURNING version
"""
"""The clock advance of the code before fences (migration 0007's pollers, mid-deploy)."""


def row(price: int, *, sku: str | None = "MILK-1", item_id: str = "ITEMMILK0001") -> ProductRow:
    raw: dict[str, Any] = {"id": item_id, "name": "Milk", "price": price}
    if sku is not None:
        raw["sku"] = sku
    product = to_product(raw, merchant_id=M)
    return product_row(product, label_hash(to_record(product)))


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    apply_migrations(database_url)
    database = Database(database_url)
    PostgresMerchantDirectory(database).save(Merchant(M, "S-FENCE"))
    yield database
    database.close()


def write(db: Database, fence: Fence | None, price: int, *, label: bool = True) -> int | None:
    """One poll's transaction: a page, then (``label``) the clock's advance; its version."""
    with db.transaction(fence) as tx:
        tx.upsert(M, [row(price)])
        return tx.label_owners(M, ["MILK-1"]).version if label else None


def stored(db: Database) -> tuple[int, str | None, int | None, Any]:
    """(clock version, fence epoch, fence generation, Milk's price) as committed."""
    conn = db.connection()  # this thread's, outside any transaction: what is committed
    clock = conn.execute(
        "SELECT version, fence_epoch, fence_generation FROM label_clocks WHERE merchant_id = %s",
        (M,),
    ).fetchone()
    price = conn.execute(
        "SELECT price FROM products WHERE merchant_id = %s AND source_id = 'ITEMMILK0001'", (M,)
    ).fetchone()
    assert clock is not None
    assert price is not None
    return clock[0], clock[1], clock[2], price[0]


def test_the_fence_refuses_an_older_generation_and_accepts_a_new_epoch(db: Database) -> None:
    ledger = PostgresLabelLedger(db)
    first = write(db, Fence("epoch-a", 5), 200)
    assert stored(db)[1:] == ("epoch-a", 5, Decimal("2.00"))

    # An older generation of the same epoch: refused, rolled back whole.
    with pytest.raises(FenceRefused, match="lease"):
        write(db, Fence("epoch-a", 4), 100)
    assert stored(db) == (first, "epoch-a", 5, Decimal("2.00"))
    with pytest.raises(FenceRefused, match="lease"):  # the heal's advance, alone
        ledger.advance_label_clock(M, fence=Fence("epoch-a", 4))
    # A poll that writes products but changes no label (a product without a code) and
    # one that removes a product are fenced in their own statements.
    with pytest.raises(FenceRefused), db.transaction(Fence("epoch-a", 4)) as tx:
        tx.upsert(M, [row(100, sku=None, item_id="ITEMNOCODE01")])
    with pytest.raises(FenceRefused), db.transaction(Fence("epoch-a", 4)) as tx:
        tx.mark_deleted(M, [("ITEMMILK0001", "")])
    assert stored(db) == (first, "epoch-a", 5, Decimal("2.00"))
    # A transaction that writes nothing needs no fence: the same row again is no write.
    assert write(db, Fence("epoch-a", 4), 200, label=False) is None

    # The same generation (its own heal, a second page) and later ones go on.
    assert ledger.advance_label_clock(M, fence=Fence("epoch-a", 5)) > first
    second = write(db, Fence("epoch-a", 6), 300)
    assert stored(db) == (second, "epoch-a", 6, Decimal("3.00"))

    # Another epoch (the state item deleted and created again: its count starts over) is
    # accepted and replaces the stored one; the old epoch's generations are then unknown.
    third = write(db, Fence("epoch-b", 1), 350)
    assert stored(db) == (third, "epoch-b", 1, Decimal("3.50"))
    with pytest.raises(FenceRefused):
        write(db, Fence("epoch-b", 0), 100)

    # No token (the operator's writes, and pollers of the code before fences during a
    # deploy) fences nothing and leaves the stored fence as it is.
    fourth = write(db, None, 375)
    old = db.connection().execute(OLD_ADVANCE_CLOCK, {"m": M}).fetchone()
    assert old is not None
    assert old[0] > fourth
    assert stored(db) == (old[0], "epoch-b", 1, Decimal("3.75"))


def _waits_for(db: Database, pid: int, seconds: float = 10) -> bool:
    """Whether a backend comes to wait for ``pid``'s transaction within ``seconds``."""
    deadline = time.monotonic() + seconds
    query = "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
    while time.monotonic() < deadline:
        row = db.connection().execute(query, (pid,)).fetchone()
        if row and row[0]:
            return True
        time.sleep(0.02)
    return False


def _racing(db: Database) -> tuple[Callable[..., threading.Thread], list[str]]:
    done: list[str] = []

    def start(name: str, body: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                body()
                done.append(f"{name} committed")
            except FenceRefused:
                done.append(f"{name} refused")

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    return start, done


def test_of_two_racing_transactions_the_older_generation_never_commits_after_the_newer(
    db: Database,
) -> None:
    """Two polls of one merchant in the same moment (one outlived its lease): the row lock
    on the merchant's clock orders them. The older wrote first: the newer waits for it to
    commit, then commits after it with a larger clock value. The newer wrote first: the
    older waits for it, then is refused and rolls back whole."""
    start, done = _racing(db)
    epoch = "epoch-race"
    write(db, Fence(epoch, 1), 100)

    # The older (2) writes first and waits (on Clover, say) before its clock advance.
    older_wrote, finish_older = threading.Event(), threading.Event()
    versions: dict[str, int] = {}

    def older() -> None:
        with db.transaction(Fence(epoch, 2)) as tx:
            tx.upsert(M, [row(200)])
            older_wrote.set()
            finish_older.wait(10)
            versions["older"] = tx.label_owners(M, ["MILK-1"]).version

    def newer() -> None:
        with db.transaction(Fence(epoch, 3)) as tx:
            tx.upsert(M, [row(300)])
            done.append("newer wrote")
            versions["newer"] = tx.label_owners(M, ["MILK-1"]).version

    threads = [start("older", older)]
    assert older_wrote.wait(10)
    threads.append(start("newer", newer))
    threads[1].join(0.5)
    assert done == [], "the newer wrote while the older held the merchant's clock"
    finish_older.set()
    for thread in threads:
        thread.join(10)
    # (the newer's "wrote" may be noted before the older's thread notes its commit)
    assert sorted(done) == ["newer committed", "newer wrote", "older committed"]
    assert versions["newer"] > versions["older"]
    assert stored(db) == (versions["newer"], epoch, 3, Decimal("3.00"))

    # The newer (5) writes first; the older (4), which read Clover before it, writes after.
    done.clear()
    newer_wrote, finish_newer = threading.Event(), threading.Event()

    def newer_first() -> None:
        with db.transaction(Fence(epoch, 5)) as tx:
            tx.upsert(M, [row(500)])
            versions["newer"] = tx.label_owners(M, ["MILK-1"]).version
            newer_wrote.set()
            finish_newer.wait(10)

    def older_late() -> None:
        with db.transaction(Fence(epoch, 4)) as tx:
            tx.upsert(M, [row(400)])  # waits for the newer's row lock on the clock
            tx.label_owners(M, ["MILK-1"])

    threads = [start("newer", newer_first)]
    assert newer_wrote.wait(10)
    threads.append(start("older", older_late))
    threads[1].join(0.5)
    assert done == []
    finish_newer.set()
    for thread in threads:
        thread.join(10)
    # (sorted: the waiting thread may note its outcome before the first notes its commit)
    assert sorted(done) == ["newer committed", "older refused"]
    assert stored(db) == (versions["newer"], epoch, 5, Decimal("5.00"))


def test_taking_the_lease_counts_its_generation_and_sets_its_epoch_once(stack: LocalStack) -> None:
    """No extra call: the lease's write itself. An item without a fence (written before
    fences, or new) gets one on its first take; a deleted and recreated item a new epoch;
    a fence edited by hand one more write, which starts a new epoch."""
    store = runtime.state_store()
    assert isinstance(store, DynamoStateStore)
    table = boto3.client("dynamodb")
    key = {"merchant_id": {"S": M}}
    name = stack.env["STATE_TABLE_NAME"]
    table.put_item(TableName=name, Item={**key, "version": {"N": "3"}})  # before fences

    def take(now_ms: int) -> Fence:
        leased = store.take_lease(M, f"owner-{now_ms}", now_ms=now_ms, duration_ms=10)
        assert leased is not None
        assert leased.fence is not None
        assert leased.state.version == 3
        return leased.fence

    first = take(1_000)
    assert first.generation == 1
    assert len(first.epoch) == 32
    assert take(2_000) == Fence(first.epoch, 2)
    assert store.take_lease(M, "busy", now_ms=2_005, duration_ms=10) is None
    assert take(3_000) == Fence(first.epoch, 3)  # a refused take counts nothing

    table.delete_item(TableName=name, Key=key)  # merchant removed, and added again
    table.put_item(TableName=name, Item={**key, "version": {"N": "3"}})
    renewed = take(4_000)
    assert renewed.generation == 1
    assert renewed.epoch != first.epoch

    for k, broken in enumerate(({"S": "7"}, {"N": "1.5"}, {"N": str(2**63)})):
        table.update_item(
            TableName=name,
            Key=key,
            UpdateExpression="SET lease_generation = :g",
            ExpressionAttributeValues={":g": broken},
        )
        again = take(10_000 * (k + 1))
        assert (again.generation, again.epoch == renewed.epoch) == (1, False), broken
        renewed = again


def test_two_polls_whose_pages_cross_never_deadlock_and_the_newer_wins(db: Database) -> None:
    """The older poll (its lease lost) wrote its first page (Milk) and reads its next one;
    the newer poll's page is Bread, which the older's next page holds too (Clover's answer
    to it read before the newer's). The newer must wait for the older without holding
    Bread: a deadlock would end one of them (Postgres ends the one that waited first: the
    newer), and the older would then commit Bread's older version."""
    start, done = _racing(db)
    epoch = "epoch-cross"
    bread = "ITEMBREAD001"
    with db.transaction(Fence(epoch, 1)) as tx:
        tx.upsert(M, [row(100), row(250, sku="BREAD-1", item_id=bread)])

    older_wrote, finish_older = threading.Event(), threading.Event()

    def older() -> None:
        with db.transaction(Fence(epoch, 2)) as tx:
            tx.upsert(M, [row(200)])
            older_wrote.set()
            finish_older.wait(10)
            tx.upsert(M, [row(260, sku="BREAD-1", item_id=bread)])

    def newer() -> None:
        with db.transaction(Fence(epoch, 3)) as tx:
            tx.upsert(M, [row(270, sku="BREAD-1", item_id=bread)])

    failures: list[str] = []

    def noting(body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except Exception as error:
                failures.append(type(error).__name__)
                raise

        return run

    threads = [start("older", noting(older))]
    assert older_wrote.wait(10)
    threads.append(start("newer", noting(newer)))
    threads[1].join(0.5)  # waiting for the older to end
    finish_older.set()
    for thread in threads:
        thread.join(15)
    assert failures == []
    # (sorted: the waiting thread may note its outcome before the first notes its commit)
    assert sorted(done) == ["newer committed", "older committed"]
    query = "SELECT price FROM products WHERE merchant_id = %s AND source_id = %s"
    price = db.connection().execute(query, (M, bread)).fetchone()
    assert price == (Decimal("2.70"),), "the older poll's Bread replaced the newer's"
    assert stored(db)[1:3] == (epoch, 3)


def test_a_write_the_statement_did_not_foresee_is_fenced_after_it(db: Database) -> None:
    """The older poll's page holds Milk as stored (nothing to write, as its statement reads
    the table), but the newer poll changes Milk meanwhile: the older's upsert waits for the
    newer's row, then writes over it, and is refused there, rolled back whole."""
    start, done = _racing(db)
    epoch = "epoch-unforeseen"
    write(db, Fence(epoch, 5), 200)
    newer_wrote, finish_newer = threading.Event(), threading.Event()
    newer_pid: list[int] = []

    def newer() -> None:
        with db.transaction(Fence(epoch, 6)) as tx:
            tx.upsert(M, [row(300)])
            newer_pid.append(db.connection().info.backend_pid)
            newer_wrote.set()
            finish_newer.wait(10)

    def older() -> None:
        with db.transaction(Fence(epoch, 4)) as tx:
            tx.upsert(M, [row(200)])  # as stored when the statement starts

    threads = [start("newer", newer)]
    assert newer_wrote.wait(10)
    threads.append(start("older", older))
    # The older's statement must have begun before the newer commits (else it would see
    # the newer's row and foresee its write): it waits on the newer's row lock.
    assert _waits_for(db, newer_pid[0]), "the older's statement never waited on the newer"
    finish_newer.set()
    for thread in threads:
        thread.join(10)
    # (sorted: the waiting thread may note its outcome before the first notes its commit)
    assert sorted(done) == ["newer committed", "older refused"]
    assert stored(db)[1:] == (epoch, 6, Decimal("3.00"))


def test_an_idle_poll_takes_no_lock_on_the_merchants_clock(db: Database) -> None:
    """A page that changes nothing (the overlap of an idle poll) neither checks nor takes
    the fence: another transaction can lock the clock's row meanwhile at once."""
    write(db, Fence("epoch-idle", 1), 200)
    with db.transaction(Fence("epoch-idle", 2)) as tx:
        assert tx.upsert(M, [row(200)]) == []
        assert tx.mark_deleted(M, [("ITEMGONE0001", "")]) == []
        seen: list[object] = []

        def lock_the_clock() -> None:  # another thread: another connection
            try:
                query = "SELECT fence_generation FROM label_clocks WHERE merchant_id = %s"
                seen.append(db.connection().execute(f"{query} FOR UPDATE NOWAIT", (M,)).fetchone())
            except Exception as error:
                seen.append(type(error).__name__)

        thread = threading.Thread(target=lock_the_clock)
        thread.start()
        thread.join(10)
        assert seen == [(1,)]


def test_a_lock_wait_that_times_out_is_a_transient_conflict_and_rolls_back(db: Database) -> None:
    """A poll's write waiting on a row another transaction holds, past ``lock_timeout``
    (an operator's setting on the login): Postgres ends the statement (55P03), and the
    adapter raises it as the logic's ``TransientConflict`` (retried, no page), never
    psycopg's; the transaction is rolled back and the connection usable."""
    write(db, None, 100)
    other = Database(db._conninfo())
    try:
        with other.transaction() as holder:
            holder.upsert(M, [row(150)])  # holds Milk's row
            db.connection().execute("SET lock_timeout = '200ms'")
            with pytest.raises(TransientConflict, match="Postgres LockNotAvailable"):
                write(db, None, 200)
    finally:
        other.close()
    assert stored(db)[3] == Decimal("1.50")  # the holder's, committed; the timed-out write none
    assert write(db, None, 250, label=False) is None  # the same connection goes on
    assert stored(db)[3] == Decimal("2.50")
