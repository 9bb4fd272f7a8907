"""``esl-sync restore catch-up`` against the state items an operator meets in the field:
hand-edited ones, ids that are no merchant id (terminal escapes, NUL, long), an item whose
write DynamoDB refuses, many items (the Scan's pages). Real moto, Postgres and the CLI.

Every line printable, one line per item, the rest of the fleet caught up even when one
item is refused (named, and the exit status says so at the end), never a traceback, never
anything of the item but its id.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest

from devkit.aws_calls import unrecorded
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync_ops.terminal import printable
from tests.integration.test_poll import assert_in_step, poll, sims
from tests.integration.test_postgres_restore import Backup, back_up, clover_later, sequence_value

MERCHANT = "MRESTOREIT01"
STORE = "STORE-RESTOREIT"
MILK = {"name": "Milk", "price": 100, "sku": "MILK-1"}
SWEEP_DUE = "sweep due: its next poll reads the whole catalog and confirms what Clover deleted"
TABLE = "StateTable"
HOSTILE_IDS = [
    "M\x1b]0;pwned\x07\x1b[2J",  # terminal title and clear-screen escapes
    "M\x00NUL",
    "M\u202eLTR",  # a bidirectional override
    "line\nbreak",
    "é" * 1_000,  # 2,000 bytes: near DynamoDB's 2,048 for a key
]


def put_state_item(merchant_id: str, **attributes: dict[str, str]) -> None:
    boto3.client("dynamodb").put_item(
        TableName=TABLE,
        Item={"merchant_id": {"S": merchant_id}, "high_water_ms": {"N": "1700000000000"}}
        | attributes,
    )


def test_hostile_state_item_ids_are_printed_escaped_and_never_offered_to_merchants_add(
    stack: LocalStack,
) -> None:
    for hostile in HOSTILE_IDS:
        put_state_item(hostile)
    code, out, err = stack.run_cli("restore", "catch-up")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1 + len(HOSTILE_IDS) + 1, lines
    for line in lines:
        assert line == printable(line, limit=10_000), line
    for hostile in HOSTILE_IDS:
        shown = printable(hostile)
        (line,) = (x for x in lines if x.startswith(f"{shown}: "))
        assert "merchants add" not in line, line
        assert "not a merchant id" in line, line
    assert lines[-1] == (
        f"restore catch-up: {len(HOSTILE_IDS)} sweep(s) due, 0 without a cursor,"
        f" {len(HOSTILE_IDS)} state item(s) without a merchants row"
    )


def test_an_item_dynamodb_refuses_to_write_is_named_and_the_rest_of_the_fleet_caught_up(
    stack: LocalStack,
) -> None:
    """An item whose write DynamoDB refuses (here one at the item size limit, edited by
    hand; in the field also throttling past the client's retries, or polls refusing each
    of the command's tries): its line says so, every later merchant still has its sweep
    made due, the count comes last and the exit status is 1."""
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    assert runtime.state_store().load(MERCHANT).high_water_ms is not None
    big = "MAAAAAABIG01"  # sorted before MERCHANT: the command meets it first
    put_state_item(big, pad={"S": "x" * 404_900})  # at the size limit: the write goes past
    code, out, err = stack.run_cli("restore", "catch-up")
    lines = out.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 4, (code, out, err)
    assert code == 1, (out, err)
    assert err.count("\n") == 1, err
    assert "x" * 100 not in out + err  # nothing of the item but its key
    assert re.fullmatch(
        rf"{big}: sweep NOT due \(AwsError: .*ValidationException.*\); run the command"
        " again",
        lines[1],
    ), lines[1]
    assert lines[2] == f"{MERCHANT}: {SWEEP_DUE}"
    assert lines[3] == (
        "restore catch-up: 1 sweep(s) due, 0 without a cursor,"
        " 1 state item(s) without a merchants row, 1 refused"
    )
    assert runtime.state_store().load(MERCHANT).last_sweep_ms is None  # a sweep is due


def test_a_scan_refused_says_the_versions_were_raised_and_no_sweep_made_due(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The versions are raised first, then the state table is scanned: a Scan refused (a
    deployed operator policy without ``dynamodb:Scan``, throttling; here a table that is
    not there) still leaves the versions' line printed, and one line on stderr says what
    was done and what was not, exit 1."""
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    monkeypatch.setenv("STATE_TABLE_NAME", "no-such-table")
    runtime.reset()
    with unrecorded():  # a table the stack does not have
        code, out, err = stack.run_cli("restore", "catch-up")
    assert "Traceback" not in err
    lines = out.splitlines()
    assert len(lines) == 1, (code, out, err)
    assert re.fullmatch(
        r"label versions: \d+ -> \d{16}: every version issued before is below", lines[0]
    ), lines[0]
    assert re.fullmatch(
        r"esl-sync: restore catch-up: label versions raised \(first line\), but the merchants"
        r" could not be listed \(AwsError: .*ResourceNotFoundException.*\): no sweep made"
        r" due; run the command again \(safe: the versions only move forward\)\n",
        err,
    ), err
    assert code == 1


@pytest.fixture
def backups() -> Iterator[list[Backup]]:
    taken: list[Backup] = []
    yield taken
    for backup in taken:
        backup.drop()


AHEAD_US = 30 * 86_400 * 1_000_000  # a month, in microseconds


def test_a_sequence_ahead_of_the_server_clock_is_refused_never_called_caught_up(
    stack: LocalStack, backups: list[Backup]
) -> None:
    """An earlier catch-up ran on a database server whose clock was a month ahead (or this
    server's clock is behind): the sequence is past this clock, and the versions issued
    between the backup and the restore are above what the restore put back. "Nothing to
    raise" would tell the operator the labels are safe when the stranded job outranks
    every version to come: the line says why nothing was raised and the exit status is 1."""
    clover, _ = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:  # the earlier catch-up's setval
        conn.execute(
            "SELECT setval('label_versions',"
            " (extract(epoch FROM clock_timestamp()) * 1000000)::bigint + %s)",
            (AHEAD_US,),
        )
    backup = back_up(stack, backups)
    milk = next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "MILK-1")
    clover.update_item(MERCHANT, milk, price=120)
    poll(stack, MERCHANT)  # its job, stranded by the restore, waits in the label queue
    stranded = sequence_value(stack)
    backup.restore()

    code, out, err = stack.run_cli("restore", "catch-up")
    lines = out.splitlines()
    assert sequence_value(stack) < stranded  # what the line must not hide
    assert re.fullmatch(
        r"label versions: at \d{16}, ahead of the database server's clock \(\d{16}\) by"
        r" \d+ s: NOT raised; versions issued before the restore may be above it\. Is the"
        r" server's clock behind\? Set it right and run the command again",
        lines[0],
    ), lines[0]
    assert lines[1:] == [
        f"{MERCHANT}: {SWEEP_DUE}",
        "restore catch-up: 1 sweep(s) due, 0 without a cursor,"
        " 0 state item(s) without a merchants row",
    ]
    assert code == 1, (out, err)
    assert err.count("\n") == 1, err


def test_every_page_of_the_scan_is_read_and_the_reserved_items_left_out(
    stack: LocalStack,
) -> None:
    """30 items of 300 KB: a Scan page holds 1 MB of items read (DynamoDB's, and moto's,
    before the projection), so the ids come in ten pages; ``#`` items are no merchant."""
    ids = [f"MPAGE{i:03d}" for i in range(30)]
    for merchant_id in ids:
        put_state_item(merchant_id, pad={"S": "x" * 300_000})
    put_state_item("#clover-webhook")
    code, out, err = stack.run_cli("restore", "catch-up")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[1:-1]] == ids
    assert lines[-1] == (
        "restore catch-up: 30 sweep(s) due, 0 without a cursor,"
        " 30 state item(s) without a merchants row"
    )


def test_paused_storeless_reauth_and_leased_merchants_are_each_caught_up(
    stack: LocalStack,
) -> None:
    """A merchant disabled, one whose store code was taken away (awaiting one), one needing
    re-authorisation, one whose lease a running poll holds: one line each, a sweep due,
    their other state untouched (the re-auth mark, the lease)."""
    kinds = ["MKINDPAUSED1", "MKINDSTORE01", "MKINDREAUTH1", "MKINDLEASED1"]
    for i, merchant_id in enumerate(kinds):
        stack.add_merchant(merchant_id, "tok", f"STORE-KIND{i}", items=[dict(MILK)])
        poll(stack, merchant_id)
    stack.cli("merchants", "disable", kinds[0])
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE merchants SET store_code = NULL WHERE merchant_id = %s", (kinds[1],))
    store = runtime.state_store()
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"merchant_id": {"S": kinds[2]}},
        UpdateExpression="SET auth_state = :r",
        ExpressionAttributeValues={":r": {"S": "needs_reauth"}},
    )
    leased = store.take_lease(
        kinds[3], "poll-in-flight", now_ms=time.time_ns() // 1_000_000, duration_ms=300_000
    )
    assert leased is not None
    code, out, err = stack.run_cli("restore", "catch-up")
    assert (code, err) == (0, ""), out
    assert out.splitlines()[1:] == [
        *(f"{m}: {SWEEP_DUE}" for m in sorted(kinds)),
        "restore catch-up: 4 sweep(s) due, 0 without a cursor,"
        " 0 state item(s) without a merchants row",
    ]
    assert store.load(kinds[2]).auth_state == "needs_reauth"
    item = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"merchant_id": {"S": kinds[3]}})[
        "Item"
    ]
    assert item["lease_owner"]["S"] == "poll-in-flight"


TEA = {"name": "Tea", "price": 250, "sku": "TEA-1"}


def ask_for_a_sweep(merchant_id: str, token: str) -> None:
    """What a webhook does when it cannot note every deletion: a fresh sweep request."""
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"merchant_id": {"S": merchant_id}},
        UpdateExpression="SET sweep_request = :t",
        ExpressionAttributeValues={":t": {"S": token}},
    )


def test_an_item_deleted_after_the_backup_never_comes_back_to_the_shelf(
    stack: LocalStack, backups: list[Backup]
) -> None:
    """Tea deleted in Clover after the backup, its label taken off the shelf; the restore
    puts its row back, active, with its acknowledgement. The catch-up's full read must
    settle it as a sweep would: neither the next poll, a verify and its heal, nor an
    operator's heal puts Tea back on the shelf."""
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(TEA)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert sorted(hipoink.labels(STORE)) == ["MILK-1", "TEA-1"]
    backup = back_up(stack, backups)
    tea = next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "TEA-1")
    clover.delete_item(MERCHANT, tea)
    ask_for_a_sweep(MERCHANT, "before the backup's restore")
    poll(stack, MERCHANT)  # its sweep finds Tea gone
    stack.drain("LabelQueue", "hipoink_sender")
    assert sorted(hipoink.labels(STORE)) == ["MILK-1"]
    clover_later(stack, MERCHANT)
    backup.restore()

    stack.cli("restore", "catch-up")
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    stack.cli("labels", "verify", MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert sorted(hipoink.labels(STORE)) == ["MILK-1"]
    stack.cli("heal", MERCHANT, "--older-than", "0")
    stack.drain("LabelQueue", "hipoink_sender")
    assert sorted(hipoink.labels(STORE)) == ["MILK-1"]
    assert_in_step(stack, MERCHANT, STORE)


def edit_state_item(merchant_id: str, update: str, values: dict[str, Any] | None = None) -> None:
    """An operator's console edit of the merchant's state item (or an import's loss)."""
    boto3.client("dynamodb").update_item(
        TableName=TABLE,
        Key={"merchant_id": {"S": merchant_id}},
        UpdateExpression=update,
        **({"ExpressionAttributeValues": values} if values else {}),
    )


@pytest.mark.parametrize(
    "edit",
    [
        "SET high_water_ms = :soon",  # its history kept: poll_count, last_success_at
        "SET high_water_ms = :soon REMOVE poll_count, last_success_at",  # none left
    ],
    ids=["cursor", "cursor-and-history"],
)
def test_an_item_deleted_after_the_backup_leaves_the_shelf_where_the_cursor_is_unreadable(
    stack: LocalStack, backups: list[Backup], edit: str
) -> None:
    """Tea deleted in Clover after the backup, before any sweep saw it (its label still on
    the shelf); the restore puts its row back, active; the state item's cursor is
    unreadable (edited by hand), so the next poll is a first read. The catch-up asks that
    first read to sweep: it lists the whole catalog anyway, and Tea's label goes. (A first
    read used to never sweep: Tea's row and label stayed until the next scheduled sweep,
    hours later.)"""
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(TEA)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    backup = back_up(stack, backups)
    tea = next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "TEA-1")
    clover.delete_item(MERCHANT, tea)
    clover_later(stack, MERCHANT)  # an incremental poll: Tea's deletion unseen
    backup.restore()
    assert sorted(hipoink.labels(STORE)) == ["MILK-1", "TEA-1"]
    edit_state_item(MERCHANT, edit, {":soon": {"S": "soon"}})
    assert runtime.state_store().load(MERCHANT).high_water_ms is None

    out = stack.cli("restore", "catch-up").splitlines()
    assert out[1:] == [
        f"{MERCHANT}: no cursor, {SWEEP_DUE}",
        "restore catch-up: 1 sweep(s) due, 1 without a cursor,"
        " 0 state item(s) without a merchants row",
    ]
    mark = len(stack.logs)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    (finished,) = (json.loads(x) for x in stack.logs[mark:] if '"poll finished"' in x)
    assert finished["sweep"] == "removed 1 of 1 missing", finished
    assert sorted(hipoink.labels(STORE)) == ["MILK-1"]
    assert [r["name"] for r in stack.products(MERCHANT) if r["status"] == "active"] == ["Milk"]
    assert not runtime.state_store().load(MERCHANT).sweep_requested
    assert_in_step(stack, MERCHANT, STORE)


def test_hand_edited_state_items_are_each_caught_up_in_one_line(stack: LocalStack) -> None:
    """Attributes a hand wrote (a version, a cursor, a sweep time, pending deletions of the
    wrong type or out of range): one line each, never a traceback; an unreadable cursor
    is none (the next poll reads whole), an unreadable version is written over."""
    put_state_item("MEDITVERSION", version={"S": "three"})
    put_state_item("MEDITCURSOR1", high_water_ms={"S": "soon"})
    put_state_item("MEDITSWEEP01", last_sweep_ms={"N": "1e30"}, version={"N": "-4"})
    put_state_item("MEDITPENDING", pending_deletes={"N": "1"})
    code, out, err = stack.run_cli("restore", "catch-up")
    assert (code, err) == (0, ""), out
    tail = "a state item but no merchants row (registered after the backup?); "
    lines = out.splitlines()[1:]
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        "MEDITCURSOR1",
        "MEDITPENDING",
        "MEDITSWEEP01",
        "MEDITVERSION",
    ]
    assert lines[0].startswith(f"MEDITCURSOR1: {tail}no cursor"), lines[0]
    for line in lines[1:-1]:
        assert line.split(": ", 1)[1].startswith(f"{tail}sweep due"), line
    assert lines[-1] == (
        "restore catch-up: 4 sweep(s) due, 1 without a cursor,"
        " 4 state item(s) without a merchants row"
    )
    store = runtime.state_store()
    assert store.load("MEDITVERSION").last_sweep_ms is None
    assert store.load("MEDITVERSION").unreadable == ()


def test_on_a_database_never_restored_it_costs_one_full_read_and_sends_nothing(
    stack: LocalStack,
) -> None:
    """Run by mistake (no restore): the versions jump, each merchant's next poll sweeps
    (reads its whole catalog once, finds every row as stored and sends no label; a sweep
    queues a verify, which only reads the shelf); the labels follow the next change."""
    clover, hipoink = sims(stack)
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(TEA)])
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    shelf = hipoink.labels(STORE)
    stack.cli("restore", "catch-up")
    mark = len(stack.logs)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")  # the sweep's verify: it reads the shelf
    (finished,) = (json.loads(x) for x in stack.logs[mark:] if '"poll finished"' in x)
    assert (finished["items_fetched"], finished["label_upserts"]) == (2, 0), finished
    assert finished["sweep"] == "nothing missing", finished
    assert hipoink.labels(STORE) == shelf
    milk = next(i["id"] for i in clover.items(MERCHANT) if i.get("sku") == "MILK-1")
    clover.update_item(MERCHANT, milk, price=175)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    assert hipoink.labels(STORE)["MILK-1"]["pp"] == "1.75"
    assert_in_step(stack, MERCHANT, STORE)


def _first_poll_costs(stack: LocalStack, merchant_id: str) -> tuple[int, int]:
    """The round trips of a merchant's poll and the label verifies it queued."""
    before, mark = runtime.database().round_trips, len(stack.logs)
    poll(stack, merchant_id)
    spent = runtime.database().round_trips - before
    return spent, sum('"label verify queued"' in line for line in stack.logs[mark:])


@pytest.mark.parametrize(("catch_up", "costs"), [(False, (6, 0)), (True, (9, 1))])
def test_a_merchant_never_polled_pays_a_sweep_and_a_verify_on_its_first_poll_after_it(
    stack: LocalStack, catch_up: bool, costs: tuple[int, int]
) -> None:
    """A registered merchant whose first poll has not run yet (added a moment before the
    catch-up): its state item gets the sweep request, so its first read sweeps. It has no
    rows to settle, yet it pays three round trips more than a first sync (the sweep's
    statement, the heal's ledger read, the verify claim) and one verify of its store,
    queued behind its first labels (the README's row for "no cursor, sweep due")."""
    stack.add_merchant(MERCHANT, "tok", STORE, items=[dict(MILK), dict(TEA)])
    if catch_up:
        stack.cli("restore", "catch-up")
    assert _first_poll_costs(stack, MERCHANT) == costs
    assert not runtime.state_store().load(MERCHANT).sweep_requested


def restored_after_deletions(
    stack: LocalStack, backups: list[Backup], gone: set[str]
) -> HipoinkSimulator:
    """Ten items synced, the database backed up, then the items of ``gone`` deleted in
    Clover one by one, each confirmed by a sweep of its own and its label taken off the
    shelf; then the backup restored (their rows back, active, with their
    acknowledgements). Returns the Hipoink simulator."""
    clover, hipoink = sims(stack)
    items = [{"name": f"Item {i}", "price": 100 + i, "sku": f"SKU-{i}"} for i in range(10)]
    stack.add_merchant(MERCHANT, "tok", STORE, items=items)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    backup = back_up(stack, backups)
    for n, item in enumerate(i for i in clover.items(MERCHANT) if i.get("sku") in gone):
        clover.delete_item(MERCHANT, item["id"])
        ask_for_a_sweep(MERCHANT, f"token-{n}")
        poll(stack, MERCHANT)
        stack.drain("LabelQueue", "hipoink_sender")
    assert not gone & hipoink.labels(STORE).keys()
    backup.restore()
    return hipoink


@pytest.mark.parametrize("cursor", ["readable", "unreadable"])
def test_items_deleted_one_by_one_since_the_backup_stay_off_the_shelf_past_the_fraction(
    stack: LocalStack, backups: list[Backup], cursor: str
) -> None:
    """Four of ten items deleted after the backup, each confirmed by its own sweep (three
    at most are always allowed), their labels taken off the shelf. The restore puts their
    rows back, active, with their acknowledgements: four of ten is past the refusal
    fraction, so the catch-up's sweep removes nothing, and queues no verify (whose heal
    sent the four labels again: ``assert not {'SKU-1', …} & dict_keys([... 'SKU-1', …])``
    before); the operator's ``sweep allow-deletions`` then removes their rows."""
    gone = {f"SKU-{i}" for i in range(1, 5)}
    hipoink = restored_after_deletions(stack, backups, gone)
    if cursor == "unreadable":
        edit_state_item(MERCHANT, "SET high_water_ms = :soon", {":soon": {"S": "soon"}})

    stack.cli("restore", "catch-up")
    for _ in range(3):
        poll(stack, MERCHANT)
        stack.drain("LabelQueue", "hipoink_sender")

    assert not gone & hipoink.labels(STORE).keys()
    stack.cli("sweep", "allow-deletions", MERCHANT)
    poll(stack, MERCHANT)
    stack.drain("LabelQueue", "hipoink_sender")
    rows = {r["sku"]: r["status"] for r in stack.products(MERCHANT)}
    assert {sku: rows[sku] for sku in gone} == dict.fromkeys(gone, "deleted")
    assert hipoink.labels(STORE).keys() == {f"SKU-{i}" for i in (0, *range(5, 10))}


def test_a_catch_up_sweep_over_several_polls_queues_its_verify_only_at_its_end(
    stack: LocalStack, backups: list[Backup], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three items deleted after the backup (never refused: three are always allowed),
    the sweep confirming one a poll. Its first poll queued the label verify, whose heal
    put the labels of the two rows not yet confirmed back on the shelf until the sweep
    reached them: a verify waits for the sweep's last poll, when the rows are settled."""
    from esl_sync.sync import poll as poll_module

    monkeypatch.setattr(poll_module, "MAX_CONFIRMATIONS_PER_POLL", 1)
    gone = {f"SKU-{i}" for i in range(1, 4)}
    hipoink = restored_after_deletions(stack, backups, gone)

    stack.cli("restore", "catch-up")
    for _ in range(3):
        poll(stack, MERCHANT)
        stack.drain("LabelQueue", "hipoink_sender")
        assert not gone & hipoink.labels(STORE).keys()
    rows = {r["sku"]: r["status"] for r in stack.products(MERCHANT)}
    assert {sku: rows[sku] for sku in gone} == dict.fromkeys(gone, "deleted")
    assert hipoink.labels(STORE).keys() == {f"SKU-{i}" for i in (0, *range(4, 10))}
