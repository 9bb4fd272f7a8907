"""What an upgrade finds from older code never puts a wrong or older value on a shelf: real
handlers, moto, Postgres, both simulators.

Older code is played by writing what it left: product rows and acknowledgements as it
wrote them (no label version, a $0.00 label for an item without a price), and label jobs
as it queued them (no ``version``), left in the dead-letter queue until the upgrade.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import psycopg
import pytest

from devkit.demo import expected_labels
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import REGION, LocalStack
from esl_sync import runtime
from esl_sync.clover import transform
from esl_sync.hipoink.records import label_hash
from esl_sync.settings import settings
from esl_sync.storable import MONEY_MAX_CENTS
from esl_sync.sync import poll as poll_module
from esl_sync.sync import raw_keys
from tests.integration.test_poll import emf_metrics, items_without_times, poll_lines

M = "MUPGR0000001"
STORE = "STORE-UPGRADE"


def _sims(stack: LocalStack) -> tuple[Any, HipoinkSimulator]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


def _status(stack: LocalStack) -> dict[str, Any]:
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--json"))
    return next(r for r in rows if r["merchant_id"] == M)


def _legacy_job(stack: LocalStack, queue: str, **changes: Any) -> None:
    """A label job as code from before label versions queued it: no ``version``."""
    stack.sqs.send_message(
        QueueUrl=stack.urls[queue],
        MessageBody=json.dumps({"merchant_id": M, "store_code": STORE, **changes}),
        MessageGroupId=M,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _acknowledged_before_versions(stack: LocalStack) -> None:
    """Every label of the merchant as older code acknowledged it: without a version."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE label_state SET version = NULL WHERE merchant_id = %s", (M,))


def test_a_zero_price_label_older_code_gave_an_item_without_a_price_is_taken_off(
    stack: LocalStack,
) -> None:
    clover, hipoink = _sims(stack)
    stack.add_merchant(
        M,
        "tok",
        STORE,
        items=[
            {"name": "Coffee", "price": 199, "priceType": "FIXED", "sku": "COFFEE"},
            {"name": "Open price", "priceType": "FIXED", "sku": "NOPRICE"},
        ],
    )
    stack.run_cycle()
    assert set(hipoink.labels(STORE)) == {"COFFEE"}  # this code refuses it: no label
    item = next(i for i in clover.items(M) if i["sku"] == "NOPRICE")

    # Older code stored it accepted (no price, FIXED) and put $0.00 on its label.
    zero = {"pc": "NOPRICE", "pn": "Open price", "pp": "0.00", "pi": item["id"]}
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute(
            "UPDATE products SET validation_error = NULL, refused_at = NULL,"
            " label_hash = %s, content_hash = 'older code' WHERE merchant_id = %s"
            " AND source_id = %s",
            (label_hash(zero), M, item["id"]),
        )
    _legacy_job(stack, "LabelQueue", upserts=[zero])
    assert stack.drain("LabelQueue", "hipoink_sender").failures == 0
    _acknowledged_before_versions(stack)
    assert hipoink.labels(STORE)["NOPRICE"]["pp"] == "0.00"

    # The first poll after the upgrade that reads the item refuses it, and takes the
    # $0.00 label older code gave it off, as this code never put one up.
    mark = len(stack.logs)
    stack.run_cycle()

    assert hipoink.labels(STORE) == expected_labels(clover.items(M))
    assert "NOPRICE" not in hipoink.labels(STORE)
    assert hipoink.labels(STORE)["COFFEE"]["pp"] == "1.99"
    status = _status(stack)
    assert (status["stale_labels"], status["refused_items"]) == (0, 1)
    refused = [
        r for r in json.loads(stack.cli("status", "--labels", M, "--json")) if r["pc"] == "NOPRICE"
    ]
    assert [r["action"] for r in refused] == ["refused"]
    dropped = [json.loads(line) for line in stack.logs[mark:] if "taken off" in line]
    assert [d["codes"] for d in dropped] == [["NOPRICE"]]

    # The item fixed in Clover is labelled again, at its price.
    clover.update_item(M, item["id"], price=250)
    stack.run_cycle()
    assert hipoink.labels(STORE)["NOPRICE"]["pp"] == "2.50"
    assert _status(stack)["stale_labels"] == 0


def test_jobs_from_before_versions_redriven_after_the_upgrade_never_put_an_older_value_back(
    stack: LocalStack,
) -> None:
    clover, hipoink = _sims(stack)
    stack.add_merchant(
        M,
        "tok",
        STORE,
        items=[
            {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"SKU{i}"}
            for i in range(3)
        ],
    )
    stack.run_cycle()
    shown, _, lost = (next(i for i in clover.items(M) if i["sku"] == f"SKU{n}") for n in range(3))
    clover.update_item(M, lost["id"], price=310)
    stack.dispatch()
    assert stack.drain("PollQueue", "poller").failures == 0
    stack.sqs.purge_queue(QueueUrl=stack.urls["LabelQueue"])  # 3.10's job was lost ...
    clover.update_item(M, shown["id"], price=275)  # ... 2.75's is delivered
    stack.run_cycle()
    assert hipoink.labels(STORE)["SKU0"]["pp"] == "2.75"
    assert hipoink.labels(STORE)["SKU2"]["pp"] == "1.02"
    # Every label was acknowledged by older code (no version), and older code's jobs wait
    # in the dead-letter queue: an older price, a delete of a label shown since, and the
    # lost job's value (what the product store wants now).
    _acknowledged_before_versions(stack)
    wanted = expected_labels(clover.items(M))
    _legacy_job(stack, "LabelDeadLetterQueue", upserts=[{**wanted["SKU0"], "pp": "2.50"}])
    _legacy_job(stack, "LabelDeadLetterQueue", deletes=["SKU1"])
    _legacy_job(stack, "LabelDeadLetterQueue", upserts=[wanted["SKU2"]])
    hipoink.reset_requests()
    mark = len(stack.logs)

    assert "moved 3 message(s)" in stack.cli("redrive", "--queue", "label")
    redriven = stack.drain("LabelQueue", "hipoink_sender")

    assert (redriven.records, redriven.failures) == (3, 0)
    assert hipoink.labels(STORE) == wanted  # 2.75 stays, SKU1 stays, 3.10 arrives
    assert [r["pp"] for r in hipoink.upserts_of(STORE, "SKU0")] == ["1.00", "2.75"]
    assert hipoink.request_count() == 1  # only the value wanted now was sent
    assert metric_sums(stack.logs[mark:])["LabelsSkippedOlder"] == 2
    assert not any('"level":"ERROR"' in line for line in stack.logs[mark:])
    assert _status(stack)["stale_labels"] == 0


def _hostile_catalog() -> list[dict[str, Any]]:
    """Items of every kind a poll writes: clean, refused, variable, per unit, hidden,
    deleted, codes shared, texts Hipoink or Postgres must not take as they are, and the
    amounts at the edges of their columns."""
    names = ["Cola\x00Zero", "a\ud800b", "DEL\x7f", "[x]", "back\\slash", "1e-5", "null", "😀"]
    amounts: list[Any] = [0, 1, 99, 100, 101, MONEY_MAX_CENTS, MONEY_MAX_CENTS + 1, -1, None]
    items: list[dict[str, Any]] = []
    for k in range(60):
        item: dict[str, Any] = {
            "id": f"UPG{k:03d}" + ("-_" if k % 7 == 0 else "x" * (k % 3)),
            "name": names[k % len(names)] if k % 2 else f"Item {k}",
            "price": amounts[k % len(amounts)] if k % 3 else 100 + k,
            "cost": amounts[(k + 4) % len(amounts)],
            "priceType": ["FIXED", "VARIABLE", "PER_UNIT", "FIXED"][k % 4],
            "unitName": "lb",
            "sku": f"SKU{k % 45}",  # some codes shared
        }
        if k % 11 == 5:
            item["hidden"] = True
        if k % 13 == 6:
            item["deleted"] = True
        items.append(item)
    return items


def test_a_deploy_of_a_new_mapping_sends_no_label_for_an_unchanged_item(
    stack: LocalStack, monkeypatch: pytest.MonkeyPatch, transformed: list[str]
) -> None:
    """After a deploy every stored row's key (the mapping modules' source) is another, so
    the overlap re-read and the sweep transform every item again; an item that did not
    change has the label hash it had, and no label job, Hipoink call or acknowledgement
    follows (for thousands of stores, not one Hipoink call for nothing). The deploy is
    played by a new seed, and the remembered amounts forgotten (a new process)."""
    _, hipoink = _sims(stack)
    monkeypatch.setenv("CLOVER_CLEANUP_EVERY_N_POLLS", "1")  # every later poll sweeps
    settings.cache_clear()
    stack.add_merchant(M, "tok", STORE, items=_hostile_catalog())
    stack.run_cycle()
    stack.run_cycle()  # the first sweep, its label verify (due every few hours) included
    before = {(r["source_id"], r["source_variant_id"]): r for r in stack.products(M)}
    acknowledged = stack.label_state(M)
    assert sum(1 for r in before.values() if r["label_hash"]) > 10  # labels were sent
    transformed.clear()  # from here: the polls after the deploy
    monkeypatch.setattr(raw_keys, "MAPPING_MODULES", (*raw_keys.MAPPING_MODULES, "a new deploy"))
    raw_keys._seed.cache_clear()
    monkeypatch.setattr(transform, "_AMOUNTS", {})
    hipoink.reset_requests()

    summary = stack.run_cycle()  # a sweep: every item read again

    assert set(transformed) >= {r["source_id"] for r in before.values() if r["status"] == "active"}
    after = {(r["source_id"], r["source_variant_id"]): r for r in stack.products(M)}
    changed_keys = [k for k in after if after[k]["content_hash"] != before[k]["content_hash"]]
    assert changed_keys  # the new mapping's keys were written
    assert {k: r["label_hash"] for k, r in after.items()} == {
        k: r["label_hash"] for k, r in before.items()
    }
    assert summary.labels.records == 0, "label jobs queued for unchanged items"
    assert hipoink.requests == []
    assert stack.label_state(M) == acknowledged
    raw_keys._seed.cache_clear()


def test_a_sweep_older_code_left_under_way_starts_over_under_its_permission_and_ends(
    make_stack: Callable[..., LocalStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older code kept a sweep's place in ``sweep_request_done`` (``<what it was> continues
    after <id>``; no ``sweep_after``). After the deploy that state still asks for a sweep,
    which starts over from the first id (an item deleted before that id leaves too), under
    the operator's permission in front of the marker; its end records the request done,
    using the permission up: the polls after it sweep no more."""
    monkeypatch.setattr(poll_module, "MAX_CONFIRMATIONS_PER_POLL", 3)
    stack = make_stack()
    _, hipoink = _sims(stack)
    stack.add_merchant(M, "tok", STORE, items=items_without_times(10))
    stack.run_cycle()
    clover = stack.clover
    assert clover is not None
    items = sorted(clover.items(M), key=lambda item: item["id"])
    for item in items[:6]:  # 60 %: past the fraction, allowed by the operator
        clover.delete_item(M, item["id"])
    allowed = "allow deletions 2026-12-03T18:00:00+00:00"
    boto3.client("dynamodb", region_name=REGION).update_item(
        TableName="StateTable",
        Key={"merchant_id": {"S": M}},
        UpdateExpression="SET sweep_request_done = :done",
        ExpressionAttributeValues={":done": {"S": f"{allowed} continues after {items[3]['id']}"}},
    )

    sweeps = []
    for _ in range(3):
        mark = len(poll_lines(stack, M))
        stack.run_cycle()
        sweeps += [line.get("sweep") for line in poll_lines(stack, M)[mark:]]
    assert sweeps == [
        "removed 3 of 6 missing, 3 confirmed (deletions allowed)",  # from the first id
        "removed 3 of 3 missing, 3 confirmed (deletions allowed)",
    ]  # the third poll: no sweep (a quiet poll has no line)
    state = runtime.state_store().load(M)
    assert (state.sweep_requested, state.sweep_after, state.sweep_for) == (False, None, None)
    assert set(hipoink.labels(STORE)) == {str(item["sku"]) for item in items[6:]}
    assert emf_metrics(stack, "SweepRefused") == []
