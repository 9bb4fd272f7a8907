"""Every Clover item is stored or named, never fatal (issue 11, part A).

Through the real handlers: an item Postgres or Hipoink cannot take is cleaned or refused by
name; it never stops its page or freezes its store, never deletes or zeroes a label that
shows an accepted older version, and the next poll after a fix in Clover picks it up.
``test_hostile_items_property.py`` generates such items; these are the named cases.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from devkit.clover_sim import CloverSimulator
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from esl_sync.clover.transform import to_product
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.records import Merchant
from esl_sync.store.postgres import Database, PostgresMerchantDirectory
from esl_sync.store.schema import apply_migrations
from esl_sync.sync.item_rows import product_row
from esl_sync_ops.cli import main

M, STORE = "MHOSTILE0001", "S-HOSTILE"


def sims(stack: LocalStack) -> tuple[CloverSimulator, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def catalog(n: int, prefix: str = "H") -> list[dict[str, Any]]:
    return [
        {"name": f"Item {k}", "price": 100 + k, "priceType": "FIXED", "sku": f"{prefix}{k:03d}"}
        for k in range(n)
    ]


def rows(stack: LocalStack, merchant_id: str = M) -> dict[str, dict[str, Any]]:
    return {row["source_id"]: row for row in stack.products(merchant_id)}


def dollars(cents: int) -> str:
    return f"{Decimal(cents) / 100:.2f}"


def cycle_cleanly(stack: LocalStack) -> dict[str, float]:
    """One dispatcher → poller → sender cycle in which nothing fails; its metric sums."""
    mark = len(stack.logs)
    summary = stack.run_cycle()
    assert summary.polls.failures == 0
    assert summary.labels.failures == 0
    assert summary.dead_lettered == 0
    polls = [json.loads(line) for line in stack.logs[mark:] if '"poll finished"' in line]
    assert [line["status"] for line in polls] == ["ok"] * len(polls)
    return metric_sums(stack.logs[mark:])


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_a_nul_named_item_and_a_10_14_cent_item_leave_20_price_changes_reaching_their_labels_in_the_same_poll(  # noqa: E501
    stack: LocalStack,
) -> None:
    clover, hipoink = sims(stack)
    stack.add_merchant(M, "tok-hostile", STORE, items=catalog(23))
    cycle_cleanly(stack)
    nul, surrogate, huge, *others = clover.items(M)
    assert len(others) == 20

    for item in others:
        clover.update_item(M, item["id"], price=item["price"] + 50)
    clover.update_item(M, nul["id"], name="Cola\x00Zero", price=299)  # Postgres refuses NUL
    clover.update_item(M, surrogate["id"], name="Tea\ud800", code="\udfff")  # no UTF-8 for it
    clover.update_item(M, huge["id"], price=10**14)  # past numeric(14,2)

    sums = cycle_cleanly(stack)

    labels = hipoink.labels(STORE)
    assert {item["sku"]: labels[item["sku"]]["pp"] for item in others} == {
        item["sku"]: dollars(item["price"] + 50) for item in others
    }
    assert (labels[nul["sku"]]["pn"], labels[nul["sku"]]["pp"]) == ("ColaZero", "2.99")
    assert labels[surrogate["sku"]]["pn"] == "Tea"
    assert labels[huge["sku"]]["pp"] == dollars(huge["price"])  # the accepted price stays
    stored = rows(stack)
    assert stored[nul["id"]]["raw"]["name"] == "ColaZero"
    assert stored[surrogate["id"]]["raw"]["code"] == ""
    assert stored[huge["id"]]["validation_error"] == (
        f"item {huge['id']}: price is out of range (100000000000000, at most 99999999999999)"
    )
    assert sums["InvalidItems"] == 1
    assert sums["LabelUpsertsQueued"] == 22

    clover.update_item(M, huge["id"], price=1999)  # fixed in Clover: the next poll takes it
    cycle_cleanly(stack)
    assert hipoink.labels(STORE)[huge["sku"]]["pp"] == "19.99"
    assert rows(stack)[huge["id"]]["validation_error"] is None


def test_a_fixed_item_without_a_price_is_named_and_never_shown_as_zero(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clover, hipoink = sims(stack)
    fuel = {"name": "Diesel", "price": 389, "priceType": "PER_UNIT", "unitName": "gal", "sku": "D"}
    stack.add_merchant(M, "tok-hostile", STORE, items=[*catalog(2), fuel])
    cycle_cleanly(stack)
    soda, chips, diesel = clover.items(M)
    unpriced = clover.create_item(M, name="New, no price yet", sku="NEW-1", price=None)
    clover.update_item(M, soda["id"], price=None)
    clover.update_item(M, diesel["id"], price=None)

    sums = cycle_cleanly(stack)

    labels = hipoink.labels(STORE)
    assert labels[soda["sku"]]["pp"] == "1.00"  # not 0.00, not deleted: the last price
    assert labels[diesel["sku"]]["pp"] == "3.89"
    assert labels[chips["sku"]]["pp"] == "1.01"
    assert "NEW-1" not in labels
    stored = rows(stack)
    assert stored[soda["id"]]["validation_error"] == (
        f"item {soda['id']}: price is missing (a FIXED item needs one)"
    )
    assert (
        "price is missing (a PER_UNIT item needs one)" in stored[diesel["id"]]["validation_error"]
    )
    assert stored[soda["id"]]["price"] == Decimal("1.00")  # the row keeps the accepted version
    assert stored[unpriced["id"]]["label_hash"] is None
    assert sums["InvalidItems"] == 3

    text = cli(capsys, "status", "--labels", M)
    assert f"{M}: 0 stale label(s)" in text
    assert f"{M}: 3 refused item(s)" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "kept" in lines[soda["id"]]
    assert "price is missing (a FIXED item needs one)" in lines[soda["id"]]
    assert "none" in lines[unpriced["id"]]  # no label yet, none made
    refused = json.loads(cli(capsys, "status", "--labels", M, "--json"))
    assert {r["action"] for r in refused} == {"refused"}
    assert {r["pc"] for r in refused} == {soda["sku"], diesel["sku"], "NEW-1"}
    [status] = [r for r in json.loads(cli(capsys, "status", "--json")) if r["merchant_id"] == M]
    assert status["refused_items"] == 3

    clover.update_item(M, soda["id"], price=129)
    cycle_cleanly(stack)
    assert hipoink.labels(STORE)[soda["sku"]]["pp"] == "1.29"
    assert f"{M}: 2 refused item(s)" in cli(capsys, "status", "--labels", M)


def test_a_refused_item_keeps_its_label_through_a_resync_until_clover_hides_or_deletes_it(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    clover, hipoink = sims(stack)
    stack.add_merchant(M, "tok-hostile", STORE, items=catalog(3))
    cycle_cleanly(stack)
    item, other, _ = clover.items(M)
    shown = hipoink.labels(STORE)[item["sku"]]
    clover.update_item(M, item["id"], sku=item["sku"] + "\x07", price=555)  # a bell in the code

    cycle_cleanly(stack)

    assert hipoink.labels(STORE)[item["sku"]] == shown
    assert "sku is not a usable product code" in rows(stack)[item["id"]]["validation_error"]

    cli(capsys, "resync", M)  # every label re-sent from the rows: the kept version again
    stack.drain("LabelQueue", "hipoink_sender")
    stack.drain("PollQueue", "poller")  # the full re-read resync asks for, alone
    cycle_cleanly(stack)
    assert hipoink.labels(STORE)[item["sku"]] == shown
    assert hipoink.labels(STORE)[other["sku"]]["pp"] == dollars(other["price"])
    assert f"{M}: 0 stale label(s)" in cli(capsys, "status", "--labels", M)

    clover.update_item(M, other["id"], price=-1)  # refused too, then deleted in Clover
    cycle_cleanly(stack)
    assert f"{M}: 2 refused item(s)" in cli(capsys, "status", "--labels", M)
    clover.hide_item(M, item["id"])  # Clover removed them: that the shelf must follow
    clover.delete_item(M, other["id"])  # no longer listed: confirmed by the webhook's hint
    event = {"objectId": f"I:{other['id']}", "type": "DELETE", "ts": 1}
    delivery = stack.send_webhook(
        {"appId": "APP", "merchants": {M: [event]}}, stack.env["CLOVER_WEBHOOK_AUTH"]
    )
    assert (delivery.status, delivery.polls.failures, delivery.labels.failures) == (202, 0, 0)
    assert not {item["sku"], other["sku"]} & hipoink.labels(STORE).keys()
    for removed in (item, other):
        row = rows(stack)[removed["id"]]
        assert (row["status"], row["validation_error"], row["refused_at"]) == (
            "deleted",
            None,
            None,
        )
    assert f"{M}: 0 refused item(s)" in cli(capsys, "status", "--labels", M)


def test_a_page_with_unreadable_numbers_nan_and_invalid_escapes_is_stored_item_by_item(
    stack: LocalStack,
) -> None:
    """Clover's answer as text: what json.dumps would never write, a server might."""
    clover, hipoink = sims(stack)
    stack.add_merchant(M, "tok-hostile", STORE, items=[])
    t = clover.clock_ms() - 10_000
    deep = "[" * 500 + "1" + "]" * 500

    def item(n: int, fields: str) -> str:
        return (
            f'{{"id": "ITEMRAW{n:06d}", "modifiedTime": {t + n}, "priceType": "FIXED", {fields}}}'
        )

    page = ", ".join(
        [
            item(0, '"name": "Healthy", "sku": "OK-0", "price": 250, "priceType": "FIXED"'),
            item(1, f'"name": "Huge", "sku": "OK-1", "price": {"9" * 5000}'),
            item(2, '"name": "NaN cost", "sku": "OK-2", "price": 100, "cost": NaN'),
            item(3, '"name": "Inf", "sku": "OK-3", "price": Infinity'),
            item(
                4, r'"name": "Esc\u0000aped\ud800", "sku": "OK-4", "price": 300, "k\u0000\udc00": 1'
            ),
            item(5, f'"name": "Deep", "sku": "OK-5", "price": 400, "junk": {deep}'),
        ]
    )
    clover.fail_next(200, merchant_id=M, body=f'{{"elements": [{page}]}}')

    cycle_cleanly(stack)

    labels = hipoink.labels(STORE)
    assert {pc: labels[pc]["pp"] for pc in labels} == {
        "OK-0": "2.50",
        "OK-4": "3.00",
        "OK-5": "4.00",
    }
    assert labels["OK-4"]["pn"] == "Escaped"
    stored = rows(stack)
    assert (
        "price: input should be a valid integer (got str)"
        in stored["ITEMRAW000001"]["validation_error"]
    )
    assert stored["ITEMRAW000001"]["raw"]["price"].endswith("(904 more characters)")
    assert (
        "cost: input should be a valid integer (got float)"
        in stored["ITEMRAW000002"]["validation_error"]
    )
    assert stored["ITEMRAW000002"]["raw"]["cost"] == "nan"
    assert (
        "price: input should be a valid integer (got float)"
        in stored["ITEMRAW000003"]["validation_error"]
    )
    assert stored["ITEMRAW000004"]["raw"]["k"] == 1
    assert "nested deeper than 32 levels" in json.dumps(stored["ITEMRAW000005"]["raw"])


def test_a_body_nested_past_pythons_limit_fails_the_poll_by_name_and_the_retry_reads_on(
    stack: LocalStack,
) -> None:
    """No item can be read out of it, so the page (not an item) is refused: the poll fails
    as ``CloverBadResponse``, SQS delivers it again, and the next answer is read."""
    clover, hipoink = sims(stack)
    stack.add_merchant(M, "tok-hostile", STORE, items=catalog(2))
    nested = "[" * 100_000 + "]" * 100_000
    clover.fail_next(200, merchant_id=M, body=f'{{"elements": [{nested}]}}')
    mark = len(stack.logs)

    summary = stack.run_cycle()

    assert (summary.polls.failures, summary.dead_lettered) == (1, 0)
    failed = [
        json.loads(line)
        for line in stack.logs[mark:]
        if '"poll finished"' in line and '"failed"' in line
    ]
    assert failed[0]["detail"].startswith("CloverBadResponse: ")
    assert failed[0]["detail"].endswith("body is nested too deeply to read")
    assert len(hipoink.labels(STORE)) == 2


def test_one_page_statement_takes_every_value_at_its_bound(database_url: str) -> None:
    """The poll's single upsert of a full Clover page (1,000 items), every item hostile in
    its own way and each at the bound of what it may hold, is one statement Postgres takes."""
    apply_migrations(database_url)
    db = Database(database_url)
    PostgresMerchantDirectory(db).save(Merchant("MBOUNDS00001", "S-BOUNDS"))
    junk: list[Any] = ["\x00", "\ud800", float("nan"), float("-inf"), 10**4000, {"\x00": None}]
    deep: Any = "x"
    for _ in range(900):
        deep = [deep]
    hostile: list[dict[str, Any]] = [
        # numeric(14, 2) and bigint, written out: not the transform's own constants
        {"price": 10**14 - 1, "cost": 10**14 - 1, "modifiedTime": 2**63 - 1},
        {"price": 0, "modifiedTime": 0, "name": "\U0010fffd𝕏🏳️\u200d🌈\u202eRTL"},
        {"price": 10**14, "modifiedTime": 2**63},
        {"name": "n\x00" * 500_000, "sku": "S\ud800", "junk": junk},
        {"priceType": "VARIABLE", "price": None, "unitName": "\uffff" * 10},
        {"price": -(10**3000), "deep": deep},
        {"hidden": True, "price": 10**20, "name": "\x00"},
        {"itemGroup": {"id": "\x00"}, "available": "\ud800", f"k{'\x00' * 3}": "\ud800" * 5000},
    ]
    # The megabyte name once: the transform makes its row about 9 KB (the name cut to 127
    # characters, NULs gone), so more of them would test nothing more of the statement and
    # cost 0.2 s of cleaning each (25 s for every eighth item); its other items keep the
    # shape with a name of a kilobyte.
    short = hostile[3] | {"name": "n\x00" * 500}
    raws = [
        {"id": f"BOUND{k:05d}", "name": f"Bound {k}", "sku": f"B{k}", "price": 100}
        | (short if k % len(hostile) == 3 and k > 3 else hostile[k % len(hostile)])
        for k in range(1000)
    ]
    products = [to_product(raw, merchant_id="MBOUNDS00001") for raw in raws]
    page = [product_row(p, label_hash(to_record(p))) for p in products]
    trips = db.round_trips

    with db.transaction() as tx:
        written = tx.upsert("MBOUNDS00001", page)

    assert len(written) == 1000
    assert db.round_trips - trips == 3  # BEGIN, the one statement, COMMIT
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        stored = {
            r["source_id"]: r
            for r in conn.execute("SELECT * FROM products WHERE source_id LIKE 'BOUND0000_'")
        }
    assert stored["BOUND00000"]["price"] == Decimal("999999999999.99")
    assert stored["BOUND00000"]["source_modified_time"] == 2**63 - 1
    assert stored["BOUND00001"]["name"] == "\U0010fffd𝕏🏳️\u200d🌈\u202eRTL"
    assert "price is out of range" in stored["BOUND00002"]["validation_error"]
    assert "modifiedTime is out of range" in stored["BOUND00002"]["validation_error"]
    assert stored["BOUND00003"]["name"] == "n" * 127
    assert "sku is not a usable product code" in stored["BOUND00003"]["validation_error"]
    assert stored["BOUND00006"]["status"] == "deleted"
    db.close()


def test_a_refused_version_keeps_the_label_columns_of_the_accepted_one(database_url: str) -> None:
    """The upsert itself: a refused item's row keeps what its label shows; a fix replaces it."""
    apply_migrations(database_url)
    db = Database(database_url)
    PostgresMerchantDirectory(db).save(Merchant("MREFUSE00001", "S-REFUSE"))

    def write(**fields: Any) -> list[Any]:
        raw = {"id": "ITEMREF000001", "name": "Soda", "sku": "SODA", "price": 249} | fields
        product = to_product(raw, merchant_id="MREFUSE00001")
        with db.transaction() as tx:
            return tx.upsert("MREFUSE00001", [product_row(product, label_hash(to_record(product)))])

    def row() -> dict[str, Any]:
        with psycopg.connect(database_url, row_factory=dict_row) as conn:
            found = conn.execute("SELECT * FROM products WHERE source_id = 'ITEMREF000001'")
            stored = found.fetchone()
        assert stored is not None
        return dict(stored)

    write()
    accepted = row()
    [change] = write(name="Soda\x1b", sku="SODA\x00", price=10**15)

    refused = row()
    assert (change.previous_barcode, change.previous_label_hash) == (
        "SODA",
        accepted["label_hash"],
    )
    kept = ("name", "barcode", "price", "status", "label_hash", "updated_at", "extra_data")
    assert {c: refused[c] for c in kept} == {c: accepted[c] for c in kept}
    assert refused["raw"]["price"] == 10**15
    assert refused["validation_error"].startswith("item ITEMREF000001: ")
    assert refused["refused_at"] is not None

    write(price=10**16)  # still refused: since when stays
    assert row()["refused_at"] == refused["refused_at"]
    write(price=199)
    fixed = row()
    assert (fixed["price"], fixed["validation_error"], fixed["refused_at"]) == (
        Decimal("1.99"),
        None,
        None,
    )
    db.close()


def test_a_variable_price_shows_no_price_and_a_server_refusing_that_names_the_label(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    """Clover's price of a VARIABLE item (entered at the register, often 0) never reaches
    the shelf; whether a server takes the empty price is unconfirmed, so one that refuses
    it gets the label named as rejected, and nothing else held back."""
    clover, hipoink = sims(stack)
    variable = [
        {"name": "Lottery Scratch", "price": 0, "priceType": "VARIABLE", "sku": "LOTTO"},
        {"name": "Deli Sandwich", "price": 599, "priceType": "VARIABLE", "sku": "DELI"},
        {"name": "Open Price", "priceType": "VARIABLE", "sku": "OPEN"},  # no price at all
    ]
    stack.add_merchant(M, "tok-hostile", STORE, items=[*catalog(2), *variable])
    cycle_cleanly(stack)
    labels = hipoink.labels(STORE)
    assert {pc: labels[pc]["pp"] for pc in ("LOTTO", "DELI", "OPEN", "H000")} == {
        "LOTTO": "",
        "DELI": "",
        "OPEN": "",
        "H000": "1.00",
    }

    hipoink.blank_price_accepted = False
    lottery, soda = (next(i for i in clover.items(M) if i["sku"] == s) for s in ("LOTTO", "H000"))
    clover.update_item(M, lottery["id"], name="Lottery Scratch $5")
    clover.update_item(M, soda["id"], price=149)
    sums = cycle_cleanly(stack)

    assert sums["LabelsRejected"] == 1
    assert hipoink.labels(STORE)["H000"]["pp"] == "1.49"
    [rejected] = json.loads(cli(capsys, "status", "--labels", M, "--json"))
    assert (rejected["pc"], rejected["action"]) == ("LOTTO", "upsert")
    assert rejected["failure"].startswith("bad_record: ")
    assert "pp must be a decimal string" in rejected["failure"]


def test_ids_postgres_cannot_take_on_a_page_worth_a_stored_check_leave_the_rest_stored(
    stack: LocalStack,
) -> None:
    """A page of many items after the first read is checked against what is stored (so
    unchanged items skip the transform) by their ids, sent to Postgres before any item is
    judged: an id with a NUL or a lone surrogate (which Postgres refuses), a number or a
    megabyte there must not fail the poll; those items are counted as rejected."""
    clover, hipoink = sims(stack)
    stack.add_merchant(M, "tok-hostile", STORE, items=catalog(60))
    cycle_cleanly(stack)
    t = clover.clock_ms() - 1_000
    items = [{**item, "price": item["price"] + 1, "modifiedTime": t} for item in clover.items(M)]
    bad_ids: list[object] = ["BAD\u0000ID", "\ud800", 12345, "X" * 1_000_000, None]
    items += [{**items[0], "id": bad, "sku": f"BAD{n}"} for n, bad in enumerate(bad_ids)]
    clover.fail_next(200, merchant_id=M, body=json.dumps({"elements": items}))

    sums = cycle_cleanly(stack)

    assert sums["InvalidItems"] == len(bad_ids)
    labels = hipoink.labels(STORE)
    assert {pc: labels[pc]["pp"] for pc in labels} == {
        f"H{k:03d}": dollars(100 + k + 1) for k in range(60)
    }
    assert len(rows(stack)) == 60
