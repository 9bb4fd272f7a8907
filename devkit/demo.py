"""``esl-sync demo``: the main job on embedded defaults, end to end, with a verdict.

Three merchants (one gas station with 2,000 SKUs) are synced through the real handlers;
then the catalog changes (a fuel price, a new item, a deletion, a hidden item, an unhidden
item) and the next cycle must carry every change to the labels. Then a fourth merchant
installs the app in Clover itself (the install flow: the site URL, Clover's authorize page,
the callback, its store code assigned beforehand by the operator) and reaches its first
labels with no token handled by anyone. Last, a fuel price change is announced by a Clover
webhook, which brings that merchant's poll forward: the demo prints how long the change
took to reach the label, beside the scheduled path. The exit status is 0 only if every
store's labels equal what its Clover catalog says they should show.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.local_stack import CLOVER_WEBHOOK_AUTH, CycleSummary, LocalStack
from esl_sync.settings import settings

MERCHANTS = (
    ("MGASSTATION01", "STORE-GAS-01", 2000, "gas"),
    ("MCORNERSHOP01", "STORE-CNR-01", 400, "convenience"),
    ("MKIOSK000001", "STORE-KSK-01", 120, "convenience"),
)
INSTALLING = ("MAPPINSTALL1", "STORE-APP-01", 300, "convenience")
"""A merchant that onboards itself by installing the app (no operator token)."""


@dataclass
class StoreReport:
    merchant_id: str
    store_code: str
    items: int
    expected_labels: int
    labels: int
    first_cycle_upserts: int
    second_cycle_changes: int
    mismatches: list[str]


def expected_labels(items: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """What the shelf must show, derived from the raw catalog independently of the library.

    Visible, undeleted items with a product code (sku, then code) carry a label with their
    name and their price in dollars (none for a price entered at the register, VARIABLE);
    fuel sold per unit shows its unit too.
    """
    labels: dict[str, dict[str, str]] = {}
    for item in items:
        if item.get("hidden") or item.get("deleted"):
            continue
        pc = item.get("sku") or item.get("code") or item.get("alternateName")
        variable = item.get("priceType") == "VARIABLE"
        if not pc or (not variable and not isinstance(item.get("price"), int)):
            continue
        record = {
            "pc": pc,
            "pn": item["name"],
            "pp": (
                "" if variable else str((Decimal(item["price"]) / 100).quantize(Decimal("0.01")))
            ),
            "pi": item["id"],
        }
        if item.get("priceType") == "PER_UNIT" and item.get("unitName"):
            record["pu"] = item["unitName"]
        labels[pc] = record
    return labels


def _compare(expected: dict[str, dict[str, str]], actual: dict[str, dict[str, Any]]) -> list[str]:
    problems = [f"missing label {pc}" for pc in sorted(expected.keys() - actual.keys())]
    problems += [f"stale label {pc}" for pc in sorted(actual.keys() - expected.keys())]
    for pc in sorted(expected.keys() & actual.keys()):
        shown = {k: actual[pc].get(k) for k in expected[pc]}
        if shown != expected[pc]:
            problems.append(f"label {pc} shows {shown}, expected {expected[pc]}")
    return problems


def _step(say: Callable[[str], None], text: str) -> float:
    say(f"… {text}")
    return time.monotonic()


def run_demo(say: Callable[[str], None] = print) -> int:
    """Run the demo; return the process exit status."""
    # Sweep for deletions on every second poll so that the deletion shows in this short demo
    # (deployed default: every 10th poll or every 24 hours).
    with LocalStack(settings={"CLOVER_CLEANUP_EVERY_N_POLLS": "2"}, progress=say) as stack:
        clover, hipoink = stack.clover, stack.hipoink
        assert clover is not None
        assert hipoink is not None
        for merchant_id, store_code, n_items, kind in MERCHANTS:
            build = gas_station_catalog if kind == "gas" else convenience_store_catalog
            items = build(n_items, seed=len(merchant_id) + n_items)
            stack.add_merchant(merchant_id, f"token-{merchant_id}", store_code, items=items)
        say(f"seeded {len(MERCHANTS)} merchants ({sum(m[2] for m in MERCHANTS)} Clover items)")

        started = _step(say, "cycle 1: first sync of every catalog")
        first = stack.run_cycle()
        _report_cycle(say, first, started)
        first_upserts = {
            m[1]: hipoink.request_count("product/create_multiple", m[1]) for m in MERCHANTS
        }

        say("changing the catalogs: fuel price, new item, deletion, hide, unhide")
        _change_catalogs(stack)
        hipoink.reset_requests()

        started = _step(say, "cycle 2: incremental sync")
        second = stack.run_cycle()
        _report_cycle(say, second, started)
        second_changes = {
            m[1]: sum(r.n_records for r in hipoink.requests if r.store_code == m[1])
            for m in MERCHANTS
        }
        install = _install_app(stack, say)
        _webhook_price_change(stack, say, cycle_seconds=time.monotonic() - started)

        reports = []
        for merchant_id, store_code, _n, _kind in (*MERCHANTS, INSTALLING):
            items = clover.items(merchant_id)
            expected = expected_labels(items)
            actual = hipoink.labels(store_code)
            reports.append(
                StoreReport(
                    merchant_id=merchant_id,
                    store_code=store_code,
                    items=len(items),
                    expected_labels=len(expected),
                    labels=len(actual),
                    first_cycle_upserts=first_upserts.get(store_code, install),
                    second_cycle_changes=second_changes.get(store_code, 0),
                    mismatches=_compare(expected, actual),
                )
            )
    _print_table(say, reports)
    bad = [r for r in reports if r.mismatches]
    for report in bad:
        for problem in report.mismatches[:10]:
            say(f"  {report.merchant_id}: {problem}")
    say("RESULT: every label matches its catalog" if not bad else "RESULT: labels differ")
    return 1 if bad else 0


def _change_catalogs(stack: LocalStack) -> None:
    clover = stack.clover
    assert clover is not None
    gas = MERCHANTS[0][0]
    items = clover.items(gas)
    fuel = [i["id"] for i in items if i.get("priceType") == "PER_UNIT"]
    clover.bulk_price_change(gas, fuel, delta=10)
    clover.create_item(
        gas, name="Celsius Sparkling Orange 12oz", sku="DEMO-NEW-1", price=279, priceType="FIXED"
    )
    visible = [i for i in items if not i.get("hidden") and i.get("priceType") == "FIXED"]
    clover.delete_item(gas, visible[0]["id"])
    clover.hide_item(gas, visible[1]["id"])
    hidden = [i for i in items if i.get("hidden")]
    if hidden:
        clover.unhide_item(gas, hidden[0]["id"])
    corner = MERCHANTS[1][0]
    first = next(i for i in clover.items(corner) if not i.get("hidden"))
    clover.update_item(corner, first["id"], price=first.get("price", 0) + 50)


def _install_app(stack: LocalStack, say: Callable[[str], None]) -> int:
    """A merchant installs the app in Clover: the operator assigned its store beforehand
    (``esl-sync merchants set-store``); its browser goes through the site URL, Clover's
    authorize page and the callback; its first poll runs at once. The Hipoink calls of its
    first labels."""
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    merchant_id, store_code, n_items, _kind = INSTALLING
    clover.add_merchant(
        merchant_id, f"nobody-{merchant_id}", convenience_store_catalog(n_items, seed=n_items)
    )
    hipoink.add_store(store_code)
    say(f"install: {merchant_id} installs the app in Clover (its store assigned beforehand)")
    say("  " + stack.cli("merchants", "set-store", merchant_id, store_code).strip())
    started = time.monotonic()
    done = stack.install_app(merchant_id)
    page = done.callback.body.split("<title>")[1].split("</title>")[0] if done.callback else "-"
    say(
        f"  site URL {done.install.status} → Clover authorize {done.authorize_status} →"
        f" callback {done.callback.status if done.callback else '-'} ({page}); first poll"
        f" {done.polls.records}, label jobs {done.labels.records},"
        f" {len(hipoink.labels(store_code))} labels in {time.monotonic() - started:.2f} s"
    )
    return hipoink.request_count("product/create_multiple", store_code)


def _webhook_price_change(
    stack: LocalStack, say: Callable[[str], None], *, cycle_seconds: float
) -> None:
    """A fuel price change announced by Clover's webhook: the hint queues that merchant's
    poll at once, instead of the change waiting for the next scheduled dispatch."""
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    merchant_id, store_code = MERCHANTS[0][0], MERCHANTS[0][1]
    fuel = next(i for i in clover.items(merchant_id) if i.get("priceType") == "PER_UNIT")
    say(f"webhook: {fuel['name']} changes price in Clover; Clover notifies the webhook")
    changed = time.monotonic()
    clover.update_item(merchant_id, fuel["id"], price=fuel["price"] + 20)
    event = {"objectId": f"I:{fuel['id']}", "type": "UPDATE", "ts": clover.clock_ms()}
    delivery = stack.send_webhook(
        {"appId": "DEMOAPP", "merchants": {merchant_id: [event]}}, CLOVER_WEBHOOK_AUTH
    )
    shown = hipoink.labels(store_code)[fuel["sku"]]["pp"]
    interval = settings().clover_sync_interval_seconds
    say(
        f"  HTTP {delivery.status}, {delivery.polls.records} poll, {delivery.labels.records}"
        f" label job: the label shows {shown} {time.monotonic() - changed:.2f} s after the change"
    )
    say(
        f"  on the schedule alone it waits for the next dispatch (every {interval} s; deployed,"
        f" merchants are spread over most of it), then a cycle ({cycle_seconds:.1f} s here)"
    )


def _report_cycle(say: Callable[[str], None], summary: CycleSummary, started: float) -> None:
    say(
        f"  {summary.dispatched} poll(s), {summary.labels.records} label job(s),"
        f" {summary.polls.failures + summary.labels.failures} failed record(s),"
        f" {summary.dead_lettered} dead-lettered, {time.monotonic() - started:.1f} s"
    )


def _print_table(say: Callable[[str], None], reports: list[StoreReport]) -> None:
    header = (
        f"{'merchant':<15}{'store':<14}{'items':>7}{'labels':>8}{'expected':>10}"
        f"{'cycle-1 calls':>15}{'cycle-2 records':>17}  match"
    )
    say("")
    say(header)
    say("-" * len(header))
    for r in reports:
        say(
            f"{r.merchant_id:<15}{r.store_code:<14}{r.items:>7}{r.labels:>8}{r.expected_labels:>10}"
            f"{r.first_cycle_upserts:>15}{r.second_cycle_changes:>17}  "
            f"{'yes' if not r.mismatches else f'NO ({len(r.mismatches)})'}"
        )
    say("")


def main() -> int:
    return run_demo(lambda text: print(text, flush=True))


if __name__ == "__main__":
    sys.exit(main())
