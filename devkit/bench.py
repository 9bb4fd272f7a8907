"""``esl-sync bench``: what a poll costs, measured on the local stack with the real handlers.

Prints one table (and ``--json`` writes the same figures): Clover requests per poll (first
sync, idle, changed, sweep), database round trips per poll, poller CPU and Python heap per
poll and per 1,000 items, Hipoink calls per 1,000 changed labels, change-to-label latency,
the peak request rate and concurrency the Clover simulator saw (also in a mostly idle run of
many merchants), handler import times and the built package sizes.

CPU is the poller thread's own CPU time (``time.thread_time``), so the in-process emulators
do not count; the heap figure is ``tracemalloc``'s peak during the polls and does include
them, so it is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.lambda_runner import FUNCTIONS
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT

CLOVER_APP_RPS = 50
CLOVER_APP_IN_FLIGHT = 10


@dataclass
class PhaseCost:
    """Average cost of one poll in a phase of the benchmark."""

    phase: str
    polls: int
    items_per_poll: float
    clover_requests_per_poll: float
    db_round_trips_per_poll: float
    cpu_ms_per_poll: float
    cpu_ms_per_1000_items: float | None
    peak_heap_mib: float
    label_jobs: int


@dataclass
class BenchReport:
    machine: str
    date: str
    merchants: int
    skus: int
    phases: list[PhaseCost] = field(default_factory=list)
    hipoink_calls_per_1000_labels: float = 0.0
    latency_schedule_p50_s: float = 0.0
    latency_schedule_p95_s: float = 0.0
    latency_webhook_p50_s: float = 0.0
    latency_webhook_p95_s: float = 0.0
    peak_clover_rps: int = 0
    peak_clover_in_flight: int = 0
    idle_run: dict[str, Any] = field(default_factory=dict)
    max_merchants_per_app: int = 0
    import_ms: dict[str, float] = field(default_factory=dict)
    package_mib: dict[str, float] = field(default_factory=dict)


def run_bench(
    *,
    merchants: int = 50,
    skus: int = 2000,
    idle_merchants: int = 1000,
    build: bool = True,
    say: Callable[[str], None] = print,
) -> BenchReport:
    report = BenchReport(
        machine=f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        date=time.strftime("%Y-%m-%d"),
        merchants=merchants,
        skus=skus,
    )
    started = time.monotonic()
    progress: Callable[[str], None] = lambda text: say(  # noqa: E731
        f"[{time.monotonic() - started:6.1f} s] {text}"
    )
    _main_run(report, merchants, skus, progress)
    report.import_ms = _import_times(progress)
    with tempfile.TemporaryDirectory() as tmp:
        # The build (pip, mostly waiting on the network) runs beside the idle run, whose
        # figures are request counts and limits, not CPU time.
        sam_build = _start_sam_build(Path(tmp), progress) if build else None
        if idle_merchants:
            _idle_run(report, idle_merchants, progress)
        if sam_build is not None:
            report.package_mib = _package_sizes(sam_build, Path(tmp), progress)
    return report


def _main_run(report: BenchReport, merchants: int, skus: int, say: Callable[[str], None]) -> None:
    interval = 300
    # The 4th poll of each merchant sweeps: first sync, idle, changed, sweep.
    settings = {"CLOVER_CLEANUP_EVERY_N_POLLS": "4", "CLOVER_SYNC_INTERVAL_SECONDS": str(interval)}
    with LocalStack(settings=settings) as stack:
        clover, hipoink = stack.clover, stack.hipoink
        assert clover is not None
        assert hipoink is not None
        say(f"… seeding {merchants} merchants × {skus} SKUs")
        ids = [f"MBENCH{i:06d}" for i in range(merchants)]
        for n, merchant_id in enumerate(ids):
            items = gas_station_catalog(skus, seed=n)
            stack.add_merchant(merchant_id, f"bench-token-{n}", f"STORE-{n:04d}", items=items)

        first = _measure(stack, "first sync", say)
        labels = sum(len(hipoink.labels(f"STORE-{n:04d}")) for n in range(merchants))
        calls = hipoink.request_count("product/create_multiple")
        report.hipoink_calls_per_1000_labels = round(1000 * calls / max(labels, 1), 2)
        idle = _measure(stack, "idle", say)

        say("… changing catalogs: fuel prices and a few edits per store")
        rng = random.Random(1)
        for merchant_id in ids:
            items = clover.items(merchant_id)
            fuel = [i["id"] for i in items if i.get("priceType") == "PER_UNIT"]
            clover.bulk_price_change(merchant_id, fuel, delta=rng.choice((-4, 3, 6)))
            for item in rng.sample([i for i in items if not i.get("hidden")], 5):
                clover.update_item(merchant_id, item["id"], price=item.get("price", 0) + 10)
        changed = _measure(stack, "changed", say)
        sweep = _measure(stack, "sweep", say)
        report.phases = [first, idle, changed, sweep]
        report.peak_clover_rps = clover.max_rps()
        report.peak_clover_in_flight = clover.max_in_flight()

        processing = _webhook_processing_seconds(stack, ids[0], say)
        sched, hook = _latencies(interval, processing)
        report.latency_schedule_p50_s, report.latency_schedule_p95_s = sched
        report.latency_webhook_p50_s, report.latency_webhook_p95_s = hook
        per_poll = statistics.fmean(
            [idle.clover_requests_per_poll] * 9 + [sweep.clover_requests_per_poll]
        )
        report.max_merchants_per_app = int(CLOVER_APP_RPS * interval / max(per_poll, 1e-9))


def _measure(stack: LocalStack, phase: str, say: Callable[[str], None]) -> PhaseCost:
    """One cycle, with the poll queue drained under CPU, heap and request counters."""
    from esl_sync import runtime

    clover = stack.clover
    assert clover is not None
    say(f"… cycle: {phase}")
    requests_before = clover.request_count()
    trips_before = runtime.database().round_trips
    dispatched = stack.dispatch()
    tracemalloc.start()
    cpu_before = time.thread_time()
    polls = stack.drain("PollQueue", "poller", batch_size=5)
    cpu = time.thread_time() - cpu_before
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    requests = clover.request_count() - requests_before
    trips = runtime.database().round_trips - trips_before
    items = sum(_poll_lines(stack, "items_fetched")[-dispatched:])
    labels = stack.drain("LabelQueue", "hipoink_sender")
    n = max(polls.records, 1)
    return PhaseCost(
        phase=phase,
        polls=polls.records,
        items_per_poll=round(items / n, 1),
        clover_requests_per_poll=round(requests / n, 2),
        db_round_trips_per_poll=round(trips / n, 2),
        cpu_ms_per_poll=round(1000 * cpu / n, 1),
        cpu_ms_per_1000_items=round(1_000_000 * cpu / items, 1) if items else None,
        peak_heap_mib=round(peak / 2**20, 1),
        label_jobs=labels.records,
    )


def _poll_lines(stack: LocalStack, key: str) -> list[int]:
    values = []
    for line in stack.logs:
        if '"poll finished"' in line:
            values.append(int(json.loads(line).get(key, 0)))
    return values


def _webhook_processing_seconds(
    stack: LocalStack, merchant_id: str, say: Callable[[str], None]
) -> list[float]:
    """Change → label time when a poll is asked for at once (what a webhook does)."""
    from esl_sync.messages import PollRequest

    clover, hipoink = stack.clover, stack.hipoink
    assert clover is not None
    assert hipoink is not None
    say("… measuring change → label time for immediate polls")
    samples = []
    fuel = next(i for i in clover.items(merchant_id) if i.get("priceType") == "PER_UNIT")
    for k in range(5):
        clover.update_item(merchant_id, fuel["id"], price=300 + k)
        started = time.perf_counter()
        body = PollRequest(merchant_id=merchant_id, reason="manual").model_dump_json()
        stack.sqs.send_message(QueueUrl=stack.urls["PollQueue"], MessageBody=body)
        stack.drain("PollQueue", "poller")
        stack.drain("LabelQueue", "hipoink_sender")
        samples.append(time.perf_counter() - started)
    return samples


def _latencies(
    interval: int, processing: list[float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50/p95 of change → label.

    A merchant is polled every ``interval`` at its own stable offset, so a change made at a
    random moment waits uniformly up to one interval, then the measured processing; with
    a webhook only the processing remains.
    """
    rng = random.Random(7)
    scheduled = sorted(rng.uniform(0, interval) + rng.choice(processing) for _ in range(20_000))
    direct = sorted(processing)

    def pct(values: list[float], q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return (pct(scheduled, 0.5), pct(scheduled, 0.95)), (pct(direct, 0.5), pct(direct, 0.95))


def _idle_run(report: BenchReport, merchants: int, say: Callable[[str], None]) -> None:
    """Many merchants, small catalogs: the app-wide limits must hold with no 429 we caused."""
    with LocalStack() as stack:
        clover = stack.clover
        assert clover is not None
        say(f"… idle run: seeding {merchants} merchants")
        for n in range(merchants):
            # Only the idle cycle is measured: most catalogs are left empty, so that the
            # setup's first sync (label jobs included) stays short.
            items = convenience_store_catalog(2, seed=n) if n % 10 == 0 else []
            stack.add_merchant(f"MIDLE{n:07d}", f"idle-token-{n}", f"IDLE-{n:05d}", items=items)
        say("… idle run: first sync")
        stack.run_cycle()
        clover.reset_counters()
        say("… idle run: idle cycle")
        started = time.perf_counter()
        summary = stack.run_cycle()
        report.idle_run = {
            "merchants": merchants,
            "idle_cycle_seconds": round(time.perf_counter() - started, 1),
            "clover_requests": clover.request_count(),
            "clover_requests_per_poll": round(clover.request_count() / max(merchants, 1), 2),
            "peak_rps": clover.max_rps(),
            "peak_in_flight": clover.max_in_flight(),
            "answered_429": sum(1 for r in clover.requests if r.status == 429),
            "failed_polls": summary.polls.failures,
        }


def _import_times(say: Callable[[str], None]) -> dict[str, float]:
    """Milliseconds to import each handler module in a fresh interpreter (best of three)."""
    say("… timing handler imports")
    env = {
        **os.environ,
        "DATABASE_URL": "postgresql://bench@127.0.0.1:1/none",
        "POLL_QUEUE_URL": "http://127.0.0.1:1/q",
        "LABEL_QUEUE_URL": "http://127.0.0.1:1/q.fifo",
        "STATE_TABLE_NAME": "bench",
        "STATE_KEY_ID": "bench",
        "HIPOINK_API_BASE_URL": "http://127.0.0.1:1",
        "HIPOINK_SIGN": "bench",
        "CLOVER_WEBHOOK_AUTH": "bench",
        "CLOVER_OAUTH_STATE_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = (
        "import time, runpy, sys; t = time.perf_counter();"
        " runpy.run_path(sys.argv[1]); print((time.perf_counter() - t) * 1000)"
    )
    times = {}
    for name in FUNCTIONS:
        path = str(REPO_ROOT / "functions" / name / "app.py")
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code, path],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                ).stdout.strip()
            )
            for _ in range(3)
        ]
        times[name] = round(min(runs), 1)
    return times


def _start_sam_build(tmp: Path, say: Callable[[str], None]) -> subprocess.Popen[bytes] | None:
    """``sam build`` of the (arm64) template into ``tmp``, started in the background."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    sam = shutil.which("sam", path=path)
    if sam is None:
        say("  (sam not found: package sizes skipped)")
        return None
    say("… sam build started (package sizes)")
    return subprocess.Popen(
        [sam, "build", "--template", REPO_ROOT / "template.yaml", "--build-dir", tmp / "build"],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": path, "SAM_CLI_TELEMETRY": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _package_sizes(
    build: subprocess.Popen[bytes], tmp: Path, say: Callable[[str], None]
) -> dict[str, float]:
    """Unzipped MiB of the layer and of each function after ``sam build``."""
    if build.wait(timeout=900) != 0:
        say("  (sam build failed: package sizes skipped)")
        return {}
    say("… sam build done")
    folder = tmp / "build"
    return {entry.name: _mib(entry) for entry in sorted(folder.iterdir()) if entry.is_dir()}


def _mib(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 2)


def print_report(report: BenchReport, say: Callable[[str], None] = print) -> None:
    say("")
    say(f"esl-sync bench — {report.date}, {report.machine}")
    say(f"{report.merchants} merchants × {report.skus} SKUs")
    header = (
        f"{'poll':<12}{'polls':>6}{'items/poll':>11}{'Clover req':>11}{'DB trips':>9}"
        f"{'CPU ms':>8}{'CPU ms/1k items':>16}{'heap MiB':>9}{'label jobs':>11}"
    )
    say(header)
    say("-" * len(header))
    for p in report.phases:
        # Per 1,000 items means something only where a poll reads many items.
        per_k = f"{p.cpu_ms_per_1000_items}" if p.items_per_poll >= 100 else "-"
        say(
            f"{p.phase:<12}{p.polls:>6}{p.items_per_poll:>11}{p.clover_requests_per_poll:>11}"
            f"{p.db_round_trips_per_poll:>9}{p.cpu_ms_per_poll:>8}{per_k:>16}"
            f"{p.peak_heap_mib:>9}{p.label_jobs:>11}"
        )
    say("")
    say(f"Hipoink calls per 1,000 changed labels: {report.hipoink_calls_per_1000_labels}")
    say(
        f"change → label, schedule: p50 {report.latency_schedule_p50_s} s,"
        f" p95 {report.latency_schedule_p95_s} s;"
        f" immediate poll (webhook): p50 {report.latency_webhook_p50_s} s,"
        f" p95 {report.latency_webhook_p95_s} s"
    )
    say(
        f"peak Clover rate seen: {report.peak_clover_rps}/s,"
        f" in flight: {report.peak_clover_in_flight}"
        f" (app limits {CLOVER_APP_RPS}/s, {CLOVER_APP_IN_FLIGHT})"
    )
    if report.idle_run:
        say(f"idle run: {json.dumps(report.idle_run)}")
    say(
        "merchants one Clover app can serve at a 5-minute interval:"
        f" ~{report.max_merchants_per_app}"
    )
    say(f"handler import ms: {json.dumps(report.import_ms)}")
    if report.package_mib:
        say(f"built sizes MiB: {json.dumps(report.package_mib)}")


def run_from_args(args: argparse.Namespace) -> int:
    say: Callable[[str], None] = lambda text: print(text, flush=True)  # noqa: E731
    report = run_bench(
        merchants=args.merchants,
        skus=args.skus,
        idle_merchants=args.idle_merchants,
        build=not args.no_build,
        say=say,
    )
    print_report(report, say)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0
