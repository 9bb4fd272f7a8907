"""Request counts that the benchmark's figures rest on, and the benchmark itself in small."""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable

import pytest

from devkit.bench import (
    print_cold_starts,
    print_report,
    run_batch_peaks,
    run_bench,
    run_cold_starts,
    run_stages,
)
from devkit.bench_stages import STAGES
from devkit.commands import FUNCTION_NAMES
from devkit.lambda_runner import FUNCTIONS
from devkit.local_stack import LocalStack


def test_the_benchs_aws_emulator_runs_outside_the_process_it_measures() -> None:
    """The bench measures the poller's CPU in this process; with moto's server here too, its
    threads would share the poller's interpreter (GIL, caches), which no AWS service does
    in Lambda. So the bench's stacks serve moto from a child process: every AWS call of a
    poll still goes to it, the labels are right, and the child ends with the stack."""
    with LocalStack(aws_in_own_process=True) as stack:
        (moto,) = [p for p in multiprocessing.active_children() if p.name == "moto"]
        items = [{"name": "Milk", "price": 349, "sku": "MILK-1"}]
        stack.add_merchant("MCHILD000001", "tok", "S-CHILD", items=items)
        stack.run_cycle()
        assert stack.hipoink is not None
        assert stack.hipoink.labels("S-CHILD")["MILK-1"]["pp"] == "3.49"
        assert moto.is_alive()
    assert not moto.is_alive()


def test_1000_changed_labels_cost_one_hipoink_call_per_batch(stack: LocalStack) -> None:
    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    items = [
        {"name": f"Item {i}", "price": 100 + i, "priceType": "FIXED", "sku": f"SKU{i:05d}"}
        for i in range(1000)
    ]
    stack.add_merchant("MSCALE000001", "tok", "S-SCALE", items=items)
    stack.run_cycle()
    hipoink.reset_requests()

    changed = clover.items("MSCALE000001")
    clover.bulk_price_change("MSCALE000001", [i["id"] for i in changed], delta=7)
    stack.run_cycle()

    batch = int(stack.env.get("HIPOINK_BATCH_SIZE", "200"))
    assert hipoink.request_count("product/create_multiple") == math.ceil(1000 / batch)
    assert all(
        r["pp"] == f"{(100 + i + 7) / 100:.2f}"
        for i, r in enumerate(sorted(hipoink.labels("S-SCALE").values(), key=lambda r: r["pc"]))
    )


def test_the_benchmark_runs_and_its_figures_add_up(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    lines: list[str] = []
    report = run_bench(
        merchants=2,
        skus=1200,
        idle_merchants=20,
        build=False,
        cold_start_runs=1,
        say=lines.append,
    )
    print_report(report, lines.append)

    phases = {p.phase: p for p in report.phases}
    assert phases["first sync"].clover_requests_per_poll == 2  # ⌊1200/1000⌋ + 1
    assert phases["idle"].clover_requests_per_poll == 1
    assert phases["idle"].label_jobs == 0
    assert phases["changed"].label_jobs > 0
    assert phases["sweep"].clover_requests_per_poll > phases["idle"].clover_requests_per_poll
    # Every AWS call of the poller is counted, the poll queue's included
    assert phases["idle"].dynamodb_calls_per_poll == sum(
        n for action, n in phases["idle"].aws_calls_per_poll.items() if "dynamodb" in action
    )
    assert phases["first sync"].aws_calls_per_poll["kms:Decrypt"] > 0
    assert report.idle_run["clover_requests_per_poll"] == 1
    assert report.idle_run["answered_429"] == 0
    assert report.idle_run["peak_in_flight"] <= 10
    assert report.idle_run["peak_rps"] <= 50
    assert {c.function for c in report.cold_starts} == {
        "dispatcher",
        "poller",
        "hipoink_sender",
        "migrator",
        "webhook",
        "onboarding",
    }
    assert all(c.import_cpu_ms > 0 and c.peak_rss_mib > 0 for c in report.cold_starts)
    # What the cost could not count is named, in the summary and the printed table
    assert "KMS decrypts" in report.summary["cost_estimated_inputs"]
    assert any(line.startswith("  estimates (the rest is counted") for line in lines)
    assert report.summary["cost_usd_per_store_month"] == round(
        sum(line.usd for line in report.cost if "X-Ray" not in line.item), 4
    )
    assert set(report.summary) >= {
        "idle_clover_requests_per_poll",
        "idle_dynamodb_calls_per_poll",
        "first_sync_cpu_ms_per_1k_items",
        "idle_cpu_ms_per_poll",
        "poller_cold_start_ms",
        "cost_usd_per_store_month",
        "layer_mib",
    }
    assert any("DynamoDB" in line for line in lines)


def test_the_cold_start_only_bench_starts_the_functions_named(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", make_database())
    lines: list[str] = []
    report = run_cold_starts(["migrator", "poller"], build=False, runs=1, say=lines.append)
    print_cold_starts(report, lines.append)

    assert [c.function for c in report.cold_starts] == ["poller", "migrator"]
    poller = report.cold_starts[0]
    assert poller.invoke_cpu_ms is not None  # invoked with its sample event, not only imported
    assert poller.invoke_cpu_ms > 0
    assert report.summary == {
        "poller_cold_start_ms": round(poller.cpu_ms, 1),
        "migrator_cold_start_ms": report.cold_starts[1].import_cpu_ms,
    }
    assert not report.phases  # no polls ran
    assert any(line.startswith("poller ") for line in lines)
    # The command's choices are the functions the bench knows
    assert tuple(FUNCTIONS) == FUNCTION_NAMES


def test_the_batch_peak_bench_measures_whole_first_syncs_in_a_fresh_poller(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench --batch-peak``: one poller invocation per size, a fresh process, whose polls
    each synced their whole catalog (a failed poll would measure less than a first sync:
    the run refuses to report it)."""
    monkeypatch.setenv("DATABASE_URL", make_database())
    lines: list[str] = []
    peaks = run_batch_peaks([1, 1200], polls=2, say=lines.append)
    assert list(peaks) == [1, 1200]
    assert 0 < peaks[1] < peaks[1200]  # a page of 1,000 items and more holds more than one
    assert "  peak" in lines[-1]


def test_the_stage_split_covers_the_first_sync_and_unwraps_after(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bench --stages``: each stage of a first sync took CPU, together no more than the
    handler's, the rest is ``other``; the wrapped steps are the originals again afterwards."""
    import importlib

    monkeypatch.setenv("DATABASE_URL", make_database())
    steps = {
        (module, cls, method): getattr(importlib.import_module(module), cls).__dict__[method]
        for _stage, module, cls, method in STAGES
    }
    lines: list[str] = []

    split = run_stages(merchants=2, skus=1200, say=lines.append)

    named = {stage for stage, *_ in STAGES}
    assert set(split.stages_ms_per_1000_items) == named | {"other"}
    assert all(split.stages_ms_per_1000_items[stage] > 0 for stage in named)
    assert split.stages_ms_per_1000_items["other"] > -0.1  # the stages are part of the total
    assert split.total_ms_per_1000_items > split.stages_ms_per_1000_items["transform"]
    for (module, cls, method), original in steps.items():
        assert getattr(importlib.import_module(module), cls).__dict__[method] is original
    assert lines[0].startswith("first sync of 2 merchants × 1200 SKUs, CPU by stage")
    assert any(line.split()[0] == "total" for line in lines)
