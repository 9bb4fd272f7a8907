"""Postgres restored from a backup (a point-in-time restore of the database) while DynamoDB
(cursors, leases, tokens), the queues and Hipoink's shelf stay where they were.

The restore puts the ``label_versions`` sequence back: a label job made before it (in the
label queue, or dead-lettered and redriven) carries a higher version than the restored
database issues for a long while, so once it is acknowledged every later price change is
"older" and skipped. The restored product rows are older than what the shelf shows, and
each merchant's cursor is past the changes that made them newer. ``esl-sync restore
catch-up`` moves the sequence past every version issued before and has every merchant read
its whole catalog again.

The backup and the restore are real: ``CREATE DATABASE … TEMPLATE`` of the stack's database
(a file-level copy of it, sequences and all), and the restore drops the database and
creates it again from that copy under the same name, so ``DATABASE_URL`` is unchanged (the
stack's open connections are ended by it and open again on their next use). Real handlers,
moto, Postgres and the simulators over HTTP.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.messages import LabelJob
from esl_sync.records import StaleStateError
from esl_sync.store.label_ledger import PostgresLabelLedger
from esl_sync.store.postgres import Database
from esl_sync.store.schema import apply_migrations
from tests.integration.conftest import StackFactory
from tests.integration.test_poll import assert_in_step, poll, sims

MERCHANT = "MPGRESTORE01"
LATE = "MPGRESTORE02"
STORE = "STORE-PGRESTORE"
MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}
SWEEP_DUE = "sweep due: its next poll reads the whole catalog and confirms what Clover deleted"
VERSIONS_RAISED = r"label versions: \d+ -> \d{16}: every version issued before is below"


class Backup:
    """A copy of the stack's database, taken now; :meth:`restore` puts it back whole."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.name = conninfo_to_dict(url)["dbname"]
        self.copy = f"{self.name}_backup_{uuid.uuid4().hex[:6]}"
        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}"), self.copy, self.name)

    def restore(self) -> None:
        with psycopg.connect(make_conninfo(self.url, dbname="postgres"), autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(self.name)))
        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE {}"), self.name, self.copy)

    def drop(self) -> None:
        with psycopg.connect(make_conninfo(self.url, dbname="postgres"), autocommit=True) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.copy))
            )

    def _admin(self, statement: sql.SQL, target: str, template: str) -> None:
        """``statement`` from the server's own database, once nobody else is connected to
        the template (CREATE DATABASE … TEMPLATE refuses otherwise)."""
        with psycopg.connect(make_conninfo(self.url, dbname="postgres"), autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (template,),
            )
            c.execute(statement.format(sql.Identifier(target), sql.Identifier(template)))


@pytest.fixture
def backups() -> Iterator[list[Backup]]:
    taken: list[Backup] = []
    yield taken
    for backup in taken:
        backup.drop()


def back_up(stack: LocalStack, backups: list[Backup]) -> Backup:
    backups.append(Backup(stack.env["DATABASE_URL"]))
    return backups[-1]


def milk_id(stack: LocalStack) -> str:
    clover, _ = sims(stack)
    return next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "MILK-1")


def shelf_price(stack: LocalStack) -> str:
    _, hipoink = sims(stack)
    price: str = hipoink.labels(STORE)["MILK-1"]["pp"]
    return price


def dead_letter_label_jobs(stack: LocalStack) -> int:
    """Move every label job waiting in the label queue to its dead-letter queue, in order
    (what ``MaxReceiveCount`` failed receives do); how many."""
    moved = 0
    while True:
        answer = stack.sqs.receive_message(
            QueueUrl=stack.urls["LabelQueue"],
            MaxNumberOfMessages=10,
            AttributeNames=["MessageGroupId"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return moved
        for message in messages:
            stack.sqs.send_message(
                QueueUrl=stack.urls["LabelDeadLetterQueue"],
                MessageBody=message["Body"],
                MessageGroupId=message["Attributes"]["MessageGroupId"],
                MessageDeduplicationId=uuid.uuid4().hex,
            )
            stack.sqs.delete_message(
                QueueUrl=stack.urls["LabelQueue"], ReceiptHandle=message["ReceiptHandle"]
            )
            moved += 1


@pytest.mark.parametrize("where", ["label queue", "dead-letter queue"])
def test_a_job_from_before_the_restore_never_stops_the_labels_after_catch_up(
    stack: LocalStack, backups: list[Backup], where: str
) -> None:
    """The field case: polled, backed up; three price changes polled after the backup,
    their jobs still in the label queue (or dead-lettered, redriven after the catch-up);
    the database restored; the operator runs the
    catch-up; the old jobs are delivered (their versions the pre-restore sequence's); the
    price changes again, is polled and delivered: the shelf shows the newest price, and
    no label was skipped as older."""
    clover, _ = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert shelf_price(stack) == "1.00"
    backup = back_up(stack, backups)
    milk = milk_id(stack)
    for price in (110, 120, 130):
        clover.update_item(MERCHANT, milk, price=price)
        poll(stack, MERCHANT)  # its job waits in the label queue
    if where == "dead-letter queue":
        assert dead_letter_label_jobs(stack) == 3
    backup.restore()

    out = stack.cli("restore", "catch-up")
    assert re.fullmatch(VERSIONS_RAISED, out.splitlines()[0]), out
    assert out.splitlines()[1:] == [
        f"{MERCHANT}: {SWEEP_DUE}",
        "restore catch-up: 1 sweep(s) due, 0 without a cursor,"
        " 0 state item(s) without a merchants row",
    ]
    if where == "dead-letter queue":
        assert stack.cli("redrive", "--queue", "label").startswith("moved 3 message(s)")
    stack.drain("LabelQueue", "hipoink_sender")  # the pre-restore jobs
    assert shelf_price(stack) == "1.30"
    clover.update_item(MERCHANT, milk, price=150)
    mark = len(stack.logs)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")

    assert shelf_price(stack) == "1.50"
    assert metric_sums(stack.logs[mark:]).get("LabelsSkippedOlder", 0) == 0
    assert_in_step(stack, MERCHANT, STORE)


def clover_later(stack: LocalStack, merchant_id: str) -> None:
    """Clover's clock ten minutes on, and an idle poll: the merchant's cursor is then past
    what was changed so far by more than the overlap window every read starts behind it
    (``CLOVER_OVERLAP_MS``, two minutes), as it is in the field a few polls later."""
    clover, _ = sims(stack)
    clover.clock_offset_ms += 600_000
    poll(stack, merchant_id)


def test_a_change_polled_between_the_restore_and_the_catch_up_reaches_the_shelf_by_a_heal(
    make_stack: StackFactory, backups: list[Backup]
) -> None:
    """A poll that ran before the operator's catch-up wrote the new price with a version of
    the restored sequence; the job stranded by the restore (higher) is delivered first and
    the poll's job is skipped behind it. The sweep after the catch-up finds the row already
    as Clover has it and writes nothing; the label is stale, and the sweep's heal (here at
    once: ``LABEL_HEAL_AFTER_SECONDS=0``) sends the row under a version above the stranded
    one: it reaches the shelf, within ``LABEL_HEAL_AFTER_SECONDS`` with the shipped
    settings."""
    stack = make_stack(LABEL_HEAL_AFTER_SECONDS="0", CLOVER_CLEANUP_EVERY_N_POLLS="1")
    clover, _ = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    backup = back_up(stack, backups)
    milk = milk_id(stack)
    for price in (110, 120, 130):
        clover.update_item(MERCHANT, milk, price=price)
        poll(stack, MERCHANT)  # stranded by the restore
    backup.restore()
    clover.update_item(MERCHANT, milk, price=150)
    poll(stack, MERCHANT)  # before the catch-up: a restored-sequence version, queued last

    stack.cli("restore", "catch-up")
    mark = len(stack.logs)
    stack.drain("LabelQueue", "hipoink_sender")
    assert metric_sums(stack.logs[mark:])["LabelsSkippedOlder"] >= 1
    assert shelf_price(stack) == "1.30"
    poll(stack, MERCHANT)  # a sweep: the row as stored; its heal sends Milk's row
    stack.drain("LabelQueue", "hipoink_sender")
    assert shelf_price(stack) == "1.50"
    assert_in_step(stack, MERCHANT, STORE)


def sequence_value(stack: LocalStack) -> int:
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        row = conn.execute("SELECT last_value FROM label_versions").fetchone()
    assert row is not None
    return int(row[0])


def restored_after_a_delivered_change(stack: LocalStack, backups: list[Backup]) -> str:
    """Milk at 1.00, backed up; changed to 1.20, polled and delivered (the shelf shows it);
    the database restored: its row says 1.00 again, the cursor is past the change. Milk's
    item id."""
    clover, _ = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    backup = back_up(stack, backups)
    milk = milk_id(stack)
    clover.update_item(MERCHANT, milk, price=120)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert shelf_price(stack) == "1.20"
    clover_later(stack, MERCHANT)
    backup.restore()
    assert [row["price"] for row in stack.products(MERCHANT)] == [1]  # the backup's 1.00
    return milk


def test_rows_older_than_the_shelf_are_read_again_and_never_sent_back(
    stack: LocalStack, backups: list[Backup]
) -> None:
    """The restored row (1.00) is older than the shelf (1.20) and the cursor is past the
    change, so no incremental poll reads Milk again; a verify then finds the shelf
    "drifted" from the restored acknowledgement and the next poll's heal re-sends the row:
    1.00 back on the shelf. After the catch-up, the next poll reads the whole catalog
    first: the row is Clover's again, and neither the verify nor an operator's heal puts
    the older price back."""
    restored_after_a_delivered_change(stack, backups)
    stack.cli("restore", "catch-up")
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert [row["price"] for row in stack.products(MERCHANT)] == [Decimal("1.20")]

    stack.cli("labels", "verify", MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    poll(stack, MERCHANT)
    stack.cli("heal", MERCHANT, "--older-than", "0")
    stack.drain("LabelQueue", "hipoink_sender")
    assert shelf_price(stack) == "1.20"
    assert_in_step(stack, MERCHANT, STORE)
    assert stack.cli("status", "--labels", MERCHANT).startswith(f"{MERCHANT}: 0 stale label(s)")


def test_a_merchant_registered_after_the_backup_is_named_and_read_whole_once_added_again(
    stack: LocalStack, backups: list[Backup]
) -> None:
    """Its ``merchants`` row is gone with the restore, its state item (tokens, cursor) is
    not: the command names it, and once it is added again its first poll reads every
    item (the cursor it had would have skipped all it holds)."""
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    back_up(stack, backups)
    stack.add_merchant(LATE, "tok", "STORE-LATE", items=[{"name": "Tea", "price": 250}])
    poll(stack, LATE)
    stack.drain("LabelQueue", "hipoink_sender")
    clover_later(stack, LATE)
    backups[-1].restore()

    out = stack.cli("restore", "catch-up").splitlines()
    assert out[1:] == [
        f"{MERCHANT}: {SWEEP_DUE}",
        f"{LATE}: a state item but no merchants row (registered after the backup?); sweep"
        " due: its next poll reads the whole catalog and confirms what Clover deleted once it"
        " is added again:"
        f" esl-sync merchants add {LATE} --store-code STORE (its tokens are kept), or the"
        " merchant opens the app again",
        "restore catch-up: 2 sweep(s) due, 0 without a cursor,"
        " 1 state item(s) without a merchants row",
    ]
    stack.cli("merchants", "add", LATE, "--store-code", "STORE-LATE")
    stack.drain("PollQueue", "poller")
    stack.drain("LabelQueue", "hipoink_sender")
    assert [row["name"] for row in stack.products(LATE)] == ["Tea"]
    assert_in_step(stack, LATE, "STORE-LATE")


def test_running_it_twice_is_safe_and_the_labels_follow(
    stack: LocalStack, backups: list[Backup]
) -> None:
    """The second run makes the sweep due again (no poll ran in between) and raises the
    sequence again, to the clock of then (microseconds passed, fewer versions were drawn:
    never "ahead of the clock", which only a clock gone back shows); the labels still
    follow the next change."""
    clover, _ = sims(stack)
    milk = restored_after_a_delivered_change(stack, backups)
    stack.cli("restore", "catch-up")
    first = sequence_value(stack)
    again = stack.cli("restore", "catch-up").splitlines()
    assert re.fullmatch(
        rf"label versions: {first} -> \d+: every version issued before is below", again[0]
    ), again[0]
    assert sequence_value(stack) >= first
    assert again[1:] == [
        f"{MERCHANT}: {SWEEP_DUE}",
        "restore catch-up: 1 sweep(s) due, 0 without a cursor,"
        " 0 state item(s) without a merchants row",
    ]
    clover.update_item(MERCHANT, milk, price=175)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert shelf_price(stack) == "1.75"
    assert_in_step(stack, MERCHANT, STORE)


def test_with_no_merchant_it_says_so_in_one_line_and_the_count(stack: LocalStack) -> None:
    out = stack.cli("restore", "catch-up").splitlines()
    assert re.fullmatch(VERSIONS_RAISED, out[0]), out
    assert out[1:] == [
        "restore catch-up: 0 sweep(s) due, 0 without a cursor,"
        " 0 state item(s) without a merchants row"
    ]


def test_a_poll_running_across_the_catch_up_cannot_write_its_cursor_over_it(
    stack: LocalStack,
) -> None:
    """A poll that took its lease (and read the state) before the command: its state
    write, with the cursor its read moved and a sweep recorded, is refused; the next poll
    still sweeps."""
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    store = runtime.state_store()
    leased = store.take_lease(
        MERCHANT, "poll-in-flight", now_ms=time.time_ns() // 1_000_000, duration_ms=300_000
    )
    assert leased is not None
    assert leased.state.high_water_ms is not None
    stack.cli("restore", "catch-up")
    leased.state.high_water_ms += 60_000
    leased.state.last_sweep_ms = time.time_ns() // 1_000_000
    with pytest.raises(StaleStateError):
        store.save(leased.state, release_lease="poll-in-flight")
    assert store.load(MERCHANT).last_sweep_ms is None


PRE_RESTORE = st.integers(min_value=0, max_value=40)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    earlier_catch_up=st.booleans(),
    before_backup=PRE_RESTORE,
    after_backup=st.integers(min_value=1, max_value=40),
    after_restore=PRE_RESTORE,
    runs=st.integers(min_value=1, max_value=3),
)
def test_every_version_after_the_catch_up_is_above_every_one_before_the_restore(
    database_url: str,
    earlier_catch_up: bool,
    before_backup: int,
    after_backup: int,
    after_restore: int,
    runs: int,
) -> None:
    """The sequence itself, on Postgres: versions drawn before a backup and after it (the
    jobs a restore strands in the queues), the restore putting the sequence back (what a
    restore does to it: its value at the backup), versions the restored database issues
    before the command, then the command (run once or more; perhaps after an earlier
    catch-up had moved the sequence into the clock's range already): every version drawn
    after it is above every version drawn before the restore, and they keep increasing."""
    apply_migrations(database_url)
    database = Database(database_url)
    ledger = PostgresLabelLedger(database)
    conn = database.connection()
    try:
        conn.execute("SELECT setval('label_versions', 1, false)")
        if earlier_catch_up:
            ledger.raise_label_versions()

        def draw(n: int) -> list[int]:
            return [
                int(conn.execute("SELECT nextval('label_versions')").fetchone()[0])
                for _ in range(n)
            ]

        draw(before_backup)
        backed_up = conn.execute("SELECT last_value, is_called FROM label_versions").fetchone()
        stranded = draw(after_backup)
        conn.execute("SELECT setval('label_versions', %s, %s)", backed_up)  # the restore
        draw(after_restore)
        for _ in range(runs):
            raised = ledger.raise_label_versions()
            assert raised.raised_to is None or raised.raised_to == raised.floor > raised.before
        after = draw(3)
        assert min(after) > max(stranded)
        assert after == sorted(set(after))
        assert max(after) < LabelJob.MAX_VERSION
    finally:
        database.close()
