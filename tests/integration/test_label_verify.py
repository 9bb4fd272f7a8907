"""Labels are verified against what Hipoink holds, and a label that drifted is repaired:
real handlers (the sender runs the verify, the poller heals), moto, Postgres, both
simulators on loopback (docs/architecture.md, "Verifying labels against Hipoink").

Hipoink is made to hold otherwise the ways it does in the field: an older call landing
late (sent over HTTP like the timed-out call it models), an edit in the console, a restore
from backup (the simulator's ``edit`` and ``forget``, which no call of ours makes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from devkit.catalog import numbered_catalog
from devkit.emf import metric_sums
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from esl_sync.hipoink.client import HipoinkClient
from tests.integration.conftest import StackFactory

M = "MVERIFY00001"
STORE = "STORE-VERIFY"


def _hipoink(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _started(stack: LocalStack, items: int = 6) -> HipoinkSimulator:
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(items))
    stack.run_cycle()
    hipoink = _hipoink(stack)
    assert len(hipoink.labels(STORE)) == items
    return hipoink


def _verify(stack: LocalStack) -> tuple[list[str], dict[str, float]]:
    """``esl-sync labels verify`` and the sender's run of it: its log lines and metrics."""
    mark = len(stack.logs)
    assert "queued" in stack.cli("labels", "verify", M)
    drained = stack.drain("LabelQueue", "hipoink_sender")
    assert (drained.records, drained.failures) == (1, 0)  # never retried
    lines = stack.logs[mark:]
    return lines, metric_sums(lines)


def _said(lines: list[str], message: str) -> dict[str, Any]:
    [found] = [json.loads(line) for line in lines if f'"{message}' in line]
    return found


def _drifted(stack: LocalStack) -> dict[str, str]:
    return {
        row["pc"]: row["failure_message"]
        for row in stack.label_state(M)
        if row["failure_class"] == "drift"
    }


def _stale(stack: LocalStack) -> int:
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--json"))
    return int(next(r for r in rows if r["merchant_id"] == M)["stale_labels"])


def _heal_by_the_next_poll(stack: LocalStack) -> None:
    summary = stack.run_cycle()
    assert summary.polls.failures == summary.labels.failures == 0


@pytest.fixture
def client(stack: LocalStack) -> Iterator[HipoinkClient]:
    """A Hipoink client of its own: the calls our sender made once, made again late."""
    hipoink = _hipoink(stack)
    late = HipoinkClient(stack.env["HIPOINK_API_BASE_URL"], "default", lambda: hipoink.sign)
    yield late
    late.close()


def test_an_older_call_landing_late_is_found_and_the_newer_price_put_back(
    stack: LocalStack, client: HipoinkClient
) -> None:
    hipoink = _started(stack)
    clover = stack.clover
    assert clover is not None
    item = next(i for i in clover.items(M) if i["sku"] == "SKU0000")
    clover.update_item(M, item["id"], price=250)
    stack.run_cycle()
    at_250 = hipoink.labels(STORE)["SKU0000"]
    clover.update_item(M, item["id"], price=275)
    stack.run_cycle()
    assert hipoink.labels(STORE)["SKU0000"]["pp"] == "2.75"
    # The 2.50 call had timed out on our side; Hipoink applies it now, after the 2.75.
    client.upsert(STORE, [at_250])
    assert hipoink.labels(STORE)["SKU0000"]["pp"] == "2.50"
    assert _stale(stack) == 0  # the ledger says 2.75: nothing counted it stale

    lines, metrics = _verify(stack)

    assert _drifted(stack) == {"SKU0000": "Hipoink holds otherwise than acknowledged: pp"}
    assert (metrics["LabelsVerified"], metrics["LabelsDrifted"]) == (6, 1)
    assert _said(lines, "labels verified against Hipoink")["drifted_codes"] == ["SKU0000"]
    assert _stale(stack) == 1
    _heal_by_the_next_poll(stack)
    assert hipoink.labels(STORE)["SKU0000"]["pp"] == "2.75"
    assert _stale(stack) == 0
    assert _drifted(stack) == {}
    assert all(row["failure_class"] is None for row in stack.label_state(M))
    _, again = _verify(stack)
    assert (again["LabelsVerified"], again.get("LabelsDrifted", 0)) == (6, 0)


def test_a_label_upsert_landing_late_after_its_delete_is_found_and_deleted_again(
    stack: LocalStack, client: HipoinkClient
) -> None:
    """The zombie label: an item hidden in Clover had its label deleted, then the upsert
    that had timed out before lands at Hipoink: the hidden item's price is back on the
    shelf while the ledger says deleted. The verify finds it, the next poll deletes it."""
    hipoink = _started(stack)
    clover = stack.clover
    assert clover is not None
    item = next(i for i in clover.items(M) if i["sku"] == "SKU0002")
    shown = hipoink.labels(STORE)["SKU0002"]
    clover.update_item(M, item["id"], hidden=True)
    stack.run_cycle()
    assert "SKU0002" not in hipoink.labels(STORE)
    client.upsert(STORE, [shown])  # the call that had timed out on our side, applied now
    assert _stale(stack) == 0  # the ledger says deleted: nothing counted it stale

    lines, metrics = _verify(stack)

    assert _drifted(stack) == {
        "SKU0002": "Hipoink holds otherwise than acknowledged: held though deleted"
    }
    assert (metrics["LabelsVerified"], metrics["LabelsDrifted"]) == (6, 1)
    assert _said(lines, "labels verified against Hipoink")["unknown_codes"] == 0
    _heal_by_the_next_poll(stack)
    assert "SKU0002" not in hipoink.labels(STORE)
    assert _stale(stack) == 0
    assert _drifted(stack) == {}
    _, again = _verify(stack)
    assert (again["LabelsVerified"], again.get("LabelsDrifted", 0)) == (6, 0)


def test_a_console_edit_of_the_name_and_a_product_lost_in_a_restore_are_repaired(
    stack: LocalStack,
) -> None:
    hipoink = _started(stack)
    hipoink.edit(STORE, "SKU0001", pn="Staff typed this")
    hipoink.forget(STORE, "SKU0002")
    # Representation alone is no drift: a price as a number, one decimal, spaces.
    hipoink.edit(STORE, "SKU0003", pp=1.03, pn=" Item 3 ")
    hipoink.edit(STORE, "SKU0004", pp="1.040")
    _, metrics = _verify(stack)

    assert _drifted(stack) == {
        "SKU0001": "Hipoink holds otherwise than acknowledged: pn",
        "SKU0002": "Hipoink holds otherwise than acknowledged: not held",
    }
    assert metrics["LabelsDrifted"] == 2
    _heal_by_the_next_poll(stack)
    held = hipoink.labels(STORE)
    assert held["SKU0001"]["pn"] == "Item 1"
    assert held["SKU0002"] == {
        "pc": "SKU0002",
        "pn": "Item 2",
        "pp": "1.02",
        "pi": held["SKU0002"]["pi"],
    }
    assert _stale(stack) == 0
    assert _drifted(stack) == {}


def test_codes_hipoink_holds_that_the_ledger_does_not_know_are_counted_and_left_alone(
    stack: LocalStack, client: HipoinkClient
) -> None:
    hipoink = _started(stack)
    theirs = {"pc": "OTHER-SYSTEM-1", "pn": "Not ours", "pp": "9.99"}
    client.upsert(STORE, [theirs])
    lines, metrics = _verify(stack)

    verified = _said(lines, "labels verified against Hipoink")
    assert (verified["unknown_codes"], verified["unknown_codes_named"]) == (1, ["OTHER-SYSTEM-1"])
    assert metrics.get("LabelsDrifted", 0) == 0
    assert _drifted(stack) == {}
    hipoink.reset_requests()
    _heal_by_the_next_poll(stack)
    assert hipoink.request_count("product/del_multiple") == 0
    assert hipoink.labels(STORE)["OTHER-SYSTEM-1"] == theirs


def test_a_systematic_difference_marks_nothing(stack: LocalStack) -> None:
    """Every label differs the same way: a format read wrong, not six console edits."""
    hipoink = _started(stack)
    for pc in hipoink.labels(STORE):
        hipoink.edit(STORE, pc, pp="$" + str(hipoink.labels(STORE)[pc]["pp"]))
    lines, metrics = _verify(stack)

    refused = _said(lines, "label verify refused")
    assert refused["level"] == "ERROR"
    assert "6 of 6 labels differ" in refused["refused"]
    assert metrics["LabelVerifyRefused"] == 1
    assert "LabelsDrifted" not in metrics
    assert _drifted(stack) == {}
    assert _stale(stack) == 0
    hipoink.reset_requests()
    _heal_by_the_next_poll(stack)
    assert hipoink.request_count("product/create_multiple") == 0


HOSTILE = {
    "not JSON": ("<html>gateway</html>", "answer is not JSON"),
    "data not a list": ('{"error_code": 0, "data": "all of them"}', "no list of products"),
    "data missing": ('{"error_code": 0, "total": 6}', "no list of products"),
    "an answer past 1 MiB": ("x" * (1 << 21), "answer larger than"),
    "a huge number": ('{"error_code": 0, "data": [], "total": 1' + "0" * 5000 + "}", "not JSON"),
    "short of its total": ('{"error_code": 0, "data": [], "total": 6}', "listed 0 of a total"),
    "an error": ('{"error_code": 1, "error_msg": "sign error"}', "sign error"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_query_answer_is_refused_by_name_and_marks_nothing(
    stack: LocalStack, name: str
) -> None:
    body, named = HOSTILE[name]
    hipoink = _started(stack)
    hipoink.forget(STORE, "SKU0005")  # a real drift, which a refused reading must not mark
    hipoink.fail_next(200, body=body)
    lines, metrics = _verify(stack)

    refused = _said(lines, "label verify refused")
    assert named in refused["refused"]
    assert len(refused["refused"]) < 300
    assert metrics["LabelVerifyRefused"] == 1
    assert not any("Traceback" in line for line in lines)
    assert _drifted(stack) == {}
    assert stack.label_state(M)
    assert all(r["failure_class"] is None for r in stack.label_state(M))
    assert hipoink.clear_faults() == 0
    lines, metrics = _verify(stack)  # the next verify reads Hipoink's own answer
    assert _drifted(stack) == {"SKU0005": "Hipoink holds otherwise than acknowledged: not held"}


DAMAGED: dict[str, tuple[object, set[str], int]] = {
    # name: (the product added to Hipoink's own listing, or put in place of our SKU0000;
    #        the labels found drifted besides SKU0005, which is not held; products skipped)
    "another system's product without pc": ({"pn": "Car wash", "pp": "9.00"}, set(), 1),
    "a pc with NUL": ({"pc": "SKU\x000000", "pn": "x"}, set(), 1),
    "a pc of 100 characters": ({"pc": "C" * 100, "pn": "x"}, set(), 1),
    "a product that is not an object": (["SKU0000"], set(), 1),
    "another system's product with a huge name": ({"pc": "WASH-01", "pn": "x" * 10**5}, set(), 0),
    "our product with a NUL in its name": ({"pc": "SKU0000", "pn": "Item\x00 0"}, {"SKU0000"}, 0),
    "our product with a lone surrogate": ({"pc": "SKU0000", "pn": "\ud800"}, {"SKU0000"}, 0),
    "our product with a huge name": ({"pc": "SKU0000", "pn": "x" * 10**5}, {"SKU0000"}, 0),
    "our product with a price that is a list": ({"pc": "SKU0000", "pp": [1]}, {"SKU0000"}, 0),
}


@pytest.mark.parametrize("name", DAMAGED)
def test_one_damaged_or_foreign_product_never_spoils_the_verify_of_the_others(
    stack: LocalStack, name: str
) -> None:
    """A store may hold another system's products (codes and names of its own), and one
    product of ours may hold what no label of ours sends: the rest of the listing is still
    verified. A product without a usable code is skipped and counted; a field that is not
    text a label holds differs from what we send (our label drifted, and is re-sent)."""
    product, drifted, skipped = DAMAGED[name]
    hipoink = _started(stack)
    hipoink.forget(STORE, "SKU0005")  # a real drift, found whatever else the page holds
    held = [r for pc, r in sorted(hipoink.labels(STORE).items()) if pc not in drifted]
    data = [*held, product]
    body = json.dumps({"error_code": 0, "data": data, "total": len(data)})
    hipoink.fail_next(200, body=body)
    lines, metrics = _verify(stack)

    verified = _said(lines, "labels verified against Hipoink")
    assert not any("label verify refused" in line for line in lines)
    assert not any("Traceback" in line for line in lines)
    assert (verified["verified"], verified["skipped_products"]) == (6, skipped)
    assert set(_drifted(stack)) == {"SKU0005", *drifted}
    assert metrics["LabelsDrifted"] == 1 + len(drifted)
    assert hipoink.clear_faults() == 0


def test_a_sweep_poll_queues_a_verify_at_most_once_per_interval_and_its_drift_heals(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(CLOVER_CLEANUP_EVERY_N_POLLS="2")
    hipoink = _started(stack)
    hipoink.edit(STORE, "SKU0003", pn="Edited in the console")
    mark = len(stack.logs)
    for _ in range(4):  # two of them sweep
        _heal_by_the_next_poll(stack)
    lines = stack.logs[mark:]

    verifies = [json.loads(x) for x in lines if '"labels verified against Hipoink' in x]
    assert [(v["reason"], v["drifted_codes"]) for v in verifies] == [("sweep", ["SKU0003"])]
    assert sum(1 for x in lines if '"label verify queued' in x) == 1
    assert hipoink.labels(STORE)["SKU0003"]["pn"] == "Item 3"
    assert _stale(stack) == 0
    assert _drifted(stack) == {}


def test_labels_verify_refuses_bad_arguments_in_one_line(
    stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    from esl_sync_ops.cli import main

    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(1))
    for argv in (
        ["labels", "verify", "MNOTKNOWN001"],
        ["labels", "verify", "bad id\x00!"],
        ["labels", "verify"],
        ["labels", "verify", M, "extra"],
        ["labels"],
    ):
        capsys.readouterr()
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == ""
        assert len(err.strip().splitlines()) == 1, (argv, err)
    assert stack.queue_depths()["LabelQueue"] == 0
