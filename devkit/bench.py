"""``esl-sync bench``: what a poll costs, measured on the local stack with the real handlers.

It prints tables (and ``--json FILE`` writes the same figures, with a flat ``summary``):

* per kind of poll (first sync, idle, changed, sweep, a bulk edit of every item and the
  idle poll after it): Clover requests, AWS calls by action (an observer of each call, see
  devkit/aws_calls.py), database round trips, CPU, log bytes, label jobs;
* cold starts and peak memory of every function, each in a fresh process run the way
  Lambda runs it (devkit/cold_start.py);
* one store's monthly AWS cost, computed from those counts (devkit/bench_cost.py);
* change-to-label latency, the peak request rate and concurrency the Clover simulator saw
  (also in a mostly idle run of many merchants), the built package sizes.

CPU is the poller's own: the CPU time of the thread running the handler and of the
poller's worker threads, taken around each invocation (the emulators run in other
threads or processes and do not count). AWS's emulator (moto) serves from a process of
its own, as no AWS service shares a Lambda function's interpreter: in this process its
threads took the GIL and the caches from the poller's, and an idle poll measured ≈ 25 %
more CPU (2.97 against 2.33 ms, 2026-12-03). The Clover and Hipoink simulators stay
threads here (the bench drives them directly); Clover's served from a process of its own
moved a first sync's figure by ≈ 1 ms per 1,000 items, within the host's swing.
No profiler or memory tracer runs while it is measured; the Python heap is measured in a
pass of its own. Each figure is the median over the invocations of its phase, with the
lowest and highest beside it: on a machine shared with other work, CPU time stays close to
the work done, but not exactly.

Between cycles Clover's clock moves on by the poll interval, as it would between polls.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devkit import bench_cost
from devkit.aws_calls import AwsCallCounter
from devkit.catalog import convenience_store_catalog, gas_station_catalog
from devkit.clover_sim import CloverSimulator
from devkit.cold_start import (
    ColdStart,
    build_host_layer,
    cold_start,
    lambda_environment,
    layer_from_environment,
    runtime_packages,
)
from devkit.emf import metric_sums
from devkit.lambda_runner import FUNCTIONS
from devkit.local_stack import LocalStack
from devkit.template import REPO_ROOT, load_template, resolve, resource
from esl_sync.sync.verify import PAGE_SIZE as VERIFY_PAGE_SIZE

CLOVER_APP_RPS = 50
CLOVER_APP_IN_FLIGHT = 10
INTERVAL_SECONDS = 300
POLL_WORKER_PREFIX = "esl-sync-poll"
"""Name prefix of the poller's worker threads, whose CPU counts as the poller's."""
Say = Callable[[str], None]


@dataclass
class PhaseCost:
    """Average cost of one poll in a phase of the benchmark (CPU: median of invocations)."""

    phase: str
    polls: int
    invocations: int
    items_per_poll: float
    clover_requests_per_poll: float
    aws_calls_per_poll: dict[str, float]
    dynamodb_calls_per_poll: float
    db_round_trips_per_poll: float
    cpu_ms_per_poll: float
    cpu_ms_per_poll_low: float
    cpu_ms_per_poll_high: float
    cpu_ms_per_1000_items: float | None
    log_bytes_per_poll: float
    label_jobs: int  # label jobs the phase's polls queued (verify requests apart)
    label_log_bytes: int  # what the sender logged for the phase's label jobs
    label_verifies: int = 0  # label verify requests the phase's polls queued
    label_verify_log_bytes: int = 0  # the poller's lines saying so


@dataclass
class BenchReport:
    machine: str
    date: str
    merchants: int
    skus: int
    summary: dict[str, float | str | None] = field(default_factory=dict)
    phases: list[PhaseCost] = field(default_factory=list)
    heap_mib: dict[str, float] = field(default_factory=dict)
    cold_starts: list[ColdStart] = field(default_factory=list)
    cold_start_layer: str = ""
    poller_batch_peak_rss_mib: float = 0.0
    cost: list[bench_cost.CostLine] = field(default_factory=list)
    cost_inputs: dict[str, Any] = field(default_factory=dict)
    hipoink_calls_per_1000_labels: float = 0.0
    latency_schedule_p50_s: float = 0.0
    latency_schedule_p95_s: float = 0.0
    latency_webhook_p50_s: float = 0.0
    latency_webhook_p95_s: float = 0.0
    peak_clover_rps: int = 0
    peak_clover_in_flight: int = 0
    idle_run: dict[str, Any] = field(default_factory=dict)
    max_merchants_per_app: int = 0
    package_mib: dict[str, float] = field(default_factory=dict)


def run_bench(
    *,
    merchants: int = 50,
    skus: int = 2000,
    idle_merchants: int = 1000,
    build: bool = True,
    cold_start_runs: int = 7,
    say: Say = print,
) -> BenchReport:
    report = BenchReport(
        machine=f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        date=time.strftime("%Y-%m-%d"),
        merchants=merchants,
        skus=skus,
    )
    started = time.monotonic()
    progress: Say = lambda text: say(f"[{time.monotonic() - started:6.1f} s] {text}")  # noqa: E731
    inputs = _main_run(report, merchants, skus, progress)
    with tempfile.TemporaryDirectory() as tmp:
        # The builds (pip, mostly waiting on the network) run beside the idle run, whose
        # figures are request counts and limits, not CPU time.
        sam_build = _start_sam_build(Path(tmp), progress) if build else None
        layer = _start_layer_build(Path(tmp) / "layer", progress) if build else None
        if idle_merchants:
            _idle_run(report, idle_merchants, progress)
        layer_path = layer.result() if layer is not None else None
        if sam_build is not None:  # done before the cold starts: their CPU is measured alone
            report.package_mib = _package_sizes(sam_build, Path(tmp), progress)
        _cold_start_run(report, skus, layer_path, cold_start_runs, progress)
    _costs(report, inputs)
    return report


@contextmanager
def _unsynced_stack(merchants: int, skus: int) -> Iterator[tuple[LocalStack, AwsCallCounter]]:
    """A local stack of ``merchants`` gas stations of ``skus`` items, none polled yet, its
    AWS calls counted: what the quick runs (``--cpu-only``, ``--stages``) start from."""
    settings = {"CLOVER_SYNC_INTERVAL_SECONDS": str(INTERVAL_SECONDS)}
    with (
        LocalStack(settings=settings, record_aws_calls=False, aws_in_own_process=True) as stack,
        _counting(stack) as counter,
    ):
        for n in range(merchants):
            items = gas_station_catalog(skus, seed=n)
            stack.add_merchant(f"MBENCH{n:06d}", f"bench-token-{n}", f"STORE-{n:04d}", items=items)
        yield stack, counter


def run_cpu_only(*, merchants: int, skus: int, idle_cycles: int = 3, say: Say = print) -> None:
    """``bench --cpu-only``: the two CPU figures alone (a first sync, then ``idle_cycles``
    idle cycles), in a minute or so instead of the full run's minutes: for comparing a
    change to the poll's Python before and after (take medians over several runs; no
    heap pass, cold starts, idle run or builds)."""
    with _unsynced_stack(merchants, skus) as (stack, counter):
        quiet: Say = lambda _text: None  # noqa: E731
        first = _measure(stack, counter, "first sync", quiet, [])
        idle = [_measure(stack, counter, "idle", quiet, []) for _ in range(idle_cycles)]
    say(
        f"first_sync_cpu_ms_per_1k_items {first.cpu_ms_per_1000_items}"
        f"  idle_cpu_ms_per_poll {statistics.median(p.cpu_ms_per_poll for p in idle)}"
        f" (cycles: {', '.join(str(p.cpu_ms_per_poll) for p in idle)})"
    )


@dataclass
class StageSplit:
    """A first sync's CPU by stage (``bench --stages``), ms per 1,000 items."""

    merchants: int
    skus: int
    total_ms_per_1000_items: float
    stages_ms_per_1000_items: dict[str, float]  # devkit.bench_stages.STAGES, then "other"


def run_stages(*, merchants: int, skus: int, say: Say = print) -> StageSplit:
    """``bench --stages``: one first sync of every merchant (batches of 5, as the main run),
    its poller CPU split by stage (:mod:`devkit.bench_stages`). Its own run: the stages'
    wrappers are never on while the other figures are measured."""
    from devkit.bench_stages import stage_clock

    with _unsynced_stack(merchants, skus) as (stack, counter), stage_clock() as seconds:
        first = _measure(stack, counter, "first sync", lambda _text: None, [])
    fetched = first.items_per_poll * first.polls  # what the polls fetched (their metrics)
    per_1000 = 1_000_000 / max(fetched, 1)  # seconds → ms per 1,000 items
    total = first.cpu_ms_per_1000_items or 0.0
    stages = {stage: round(spent * per_1000, 2) for stage, spent in seconds.items()}
    stages["other"] = round(total - sum(stages.values()), 2)
    split = StageSplit(merchants, skus, round(total, 2), stages)
    say(f"first sync of {merchants} merchants × {skus} SKUs, CPU by stage (ms per 1,000 items):")
    for stage, ms in split.stages_ms_per_1000_items.items():
        say(f"  {stage:24s} {ms:7.2f}")
    say(f"  {'total':24s} {split.total_ms_per_1000_items:7.2f}")
    return split


def run_cold_starts(
    functions: list[str], *, build: bool = True, runs: int = 5, say: Say = print
) -> BenchReport:
    """Only the cold starts of ``functions`` (no polls, no idle run, no sizes, no cost): the
    quick loop for work on imports and first invocations. The summary holds
    ``<function>_cold_start_ms`` (import + first invocation, CPU, the median of ``runs``)."""
    report = BenchReport(
        machine=f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        date=time.strftime("%Y-%m-%d"),
        merchants=0,
        skus=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        layer = build_host_layer(Path(tmp) / "layer") if build else None
        _cold_start_run(report, 0, layer, runs, say, functions=functions)
    report.summary = {f"{c.function}_cold_start_ms": round(c.cpu_ms, 1) for c in report.cold_starts}
    return report


# -- the main run: one cycle per kind of poll ------------------------------------------------


def _main_run(report: BenchReport, merchants: int, skus: int, say: Say) -> dict[str, Any]:
    """The phases; returns what the cost model needs besides them."""
    # The 4th poll of each merchant sweeps: first sync, idle, changed, sweep; then a bulk
    # edit, and the idle poll after it.
    settings = {
        "CLOVER_CLEANUP_EVERY_N_POLLS": "4",
        "CLOVER_SYNC_INTERVAL_SECONDS": str(INTERVAL_SECONDS),
    }
    with (
        LocalStack(settings=settings, record_aws_calls=False, aws_in_own_process=True) as stack,
        _counting(stack) as counter,
    ):
        clover, hipoink = _sims(stack)
        say(f"… seeding {merchants} merchants × {skus} SKUs")
        ids = [f"MBENCH{i:06d}" for i in range(merchants)]
        for n, merchant_id in enumerate(ids):
            items = gas_station_catalog(skus, seed=n)
            stack.add_merchant(merchant_id, f"bench-token-{n}", f"STORE-{n:04d}", items=items)

        dispatcher: list[tuple[float, int]] = []
        first = _measure(stack, counter, "first sync", say, dispatcher)
        labels = sum(len(hipoink.labels(f"STORE-{n:04d}")) for n in range(merchants))
        calls = hipoink.request_count("product/create_multiple")
        report.hipoink_calls_per_1000_labels = round(1000 * calls / max(labels, 1), 2)
        idle = _measure(stack, counter, "idle", say, dispatcher)

        say("… changing catalogs: fuel prices and a few edits per store")
        rng = random.Random(1)
        for merchant_id in ids:
            items = clover.items(merchant_id)
            fuel = [i["id"] for i in items if i.get("priceType") == "PER_UNIT"]
            clover.bulk_price_change(merchant_id, fuel, delta=rng.choice((-4, 3, 6)))
            for item in rng.sample([i for i in items if not i.get("hidden")], 5):
                clover.update_item(merchant_id, item["id"], price=item.get("price", 0) + 10)
        sender: list[tuple[float, int]] = []
        changed = _measure(stack, counter, "changed", say, dispatcher, sender=sender)
        sweep = _measure(stack, counter, "sweep", say, dispatcher)
        say("… a bulk edit: every item of every store repriced within one minute")
        for merchant_id in ids:
            _bulk_edit(clover, merchant_id)
        bulk = _measure(stack, counter, "bulk edit", say, dispatcher)
        after_bulk = _measure(stack, counter, "idle after bulk edit", say, dispatcher)
        report.phases = [first, idle, changed, sweep, bulk, after_bulk]
        report.peak_clover_rps = clover.max_rps()
        report.peak_clover_in_flight = clover.max_in_flight()

        report.heap_mib = _heap_pass(stack, skus, say)
        processing = _webhook_processing_seconds(stack, ids[0], say)
        sched, hook = _latencies(INTERVAL_SECONDS, processing)
        report.latency_schedule_p50_s, report.latency_schedule_p95_s = sched
        report.latency_webhook_p50_s, report.latency_webhook_p95_s = hook
        per_poll = statistics.fmean(
            [idle.clover_requests_per_poll] * 9 + [sweep.clover_requests_per_poll]
        )
        report.max_merchants_per_app = int(CLOVER_APP_RPS * INTERVAL_SECONDS / max(per_poll, 1e-9))
        dispatch_calls = counter.snapshot("DispatcherFunction")
        dispatches = len(dispatcher)
        return {
            "state_item_bytes": _state_item_bytes(stack, ids[0]),
            "dispatcher_calls_per_merchant": {
                a: n / (dispatches * merchants) for a, n in dispatch_calls.items()
            },
            "dispatcher_cpu_ms_per_merchant": 1000 * statistics.median(c for c, _ in dispatcher),
            "sender_cpu_ms_per_job": 1000 * sum(c for c, _ in sender) / max(1, changed.label_jobs),
            "sender_log_bytes_per_job": changed.label_log_bytes / max(1, changed.label_jobs),
        }


def _sims(stack: LocalStack) -> tuple[CloverSimulator, Any]:
    assert stack.clover is not None
    assert stack.hipoink is not None
    return stack.clover, stack.hipoink


@contextmanager
def _counting(stack: LocalStack) -> Iterator[AwsCallCounter]:
    counter = AwsCallCounter()
    counter.attach()
    try:
        yield counter
    finally:
        counter.detach()


def _bulk_edit(clover: CloverSimulator, merchant_id: str) -> None:
    """Every item repriced in chunks of 100, Clover's clock moving 3 s between chunks."""
    items = [i["id"] for i in clover.items(merchant_id)]
    for start in range(0, len(items), 100):
        clover.bulk_price_change(merchant_id, items[start : start + 100], delta=1)
        clover.clock_offset_ms += 3_000


def _measure(
    stack: LocalStack,
    counter: AwsCallCounter,
    phase: str,
    say: Say,
    dispatcher: list[tuple[float, int]],
    *,
    sender: list[tuple[float, int]] | None = None,
) -> PhaseCost:
    """One cycle (Clover's clock one interval on), the poll queue drained in batches of 5."""
    from esl_sync import runtime

    clover, _ = _sims(stack)
    clover.clock_offset_ms += INTERVAL_SECONDS * 1000
    say(f"… cycle: {phase}")
    with _handler_cpu("dispatcher", dispatcher):
        dispatched = stack.dispatch()
    requests_before = clover.request_count()
    trips_before = runtime.database().round_trips
    calls_before = counter.snapshot("PollerFunction")
    invocations: list[tuple[float, int]] = []
    log_start = len(stack.logs)
    with _handler_cpu("poller", invocations):
        polls = stack.drain("PollQueue", "poller", batch_size=5)
    lines = stack.logs[log_start:]
    requests = clover.request_count() - requests_before
    trips = runtime.database().round_trips - trips_before
    calls = counter.snapshot("PollerFunction") - calls_before
    items = int(metric_sums(lines).get("ItemsFetched", 0))
    queued_verifies = [line for line in lines if '"label verify queued' in line]
    verifies = len(queued_verifies)
    label_start = len(stack.logs)
    with _handler_cpu("hipoink_sender", sender if sender is not None else []):
        labels = stack.drain("LabelQueue", "hipoink_sender")
    n = max(polls.records, 1)
    per_poll = sorted(1000 * cpu / records for cpu, records in invocations)
    total_cpu_ms = 1000 * sum(cpu for cpu, _ in invocations)
    if polls.records != dispatched:
        say(f"  ({polls.records} polls for {dispatched} dispatched: {polls.failures} failed)")
    return PhaseCost(
        phase=phase,
        polls=polls.records,
        invocations=polls.invocations,
        items_per_poll=round(items / n, 1),
        clover_requests_per_poll=round(requests / n, 2),
        aws_calls_per_poll={a: round(c / n, 3) for a, c in sorted(calls.items())},
        dynamodb_calls_per_poll=round(
            sum(c for a, c in calls.items() if a.startswith("dynamodb:")) / n, 2
        ),
        db_round_trips_per_poll=round(trips / n, 2),
        cpu_ms_per_poll=round(statistics.median(per_poll), 2),
        cpu_ms_per_poll_low=round(per_poll[0], 2),
        cpu_ms_per_poll_high=round(per_poll[-1], 2),
        cpu_ms_per_1000_items=round(1000 * total_cpu_ms / items, 1) if items else None,
        log_bytes_per_poll=round(_bytes(lines) / n, 1),
        label_jobs=labels.records - verifies,
        label_verifies=verifies,
        label_verify_log_bytes=_bytes(queued_verifies),
        label_log_bytes=_bytes(stack.logs[label_start:]),
    )


def _worker_cpu() -> float:
    """CPU seconds of the poller's worker threads alive now."""
    total = 0.0
    for thread in threading.enumerate():
        if thread.name.startswith(POLL_WORKER_PREFIX) and thread.ident is not None:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
            except (OSError, ProcessLookupError):  # it ended meanwhile
                continue
    return total


@contextmanager
def _handler_cpu(function: str, samples: list[tuple[float, int]]) -> Iterator[None]:
    """Append (CPU seconds, records) of every invocation of ``function`` meanwhile: the
    thread running the handler and the poller's worker threads, nothing else."""
    module = sys.modules[f"esl_sync_function_{function}"]  # the local stack loaded it
    handler = getattr(module, "lambda_handler")  # noqa: B009

    def timed(event: dict[str, Any], context: Any) -> Any:
        workers, own = _worker_cpu(), time.thread_time()
        try:
            return handler(event, context)
        finally:
            cpu = time.thread_time() - own + _worker_cpu() - workers
            samples.append((cpu, len(event.get("Records", [])) or 1))

    setattr(module, "lambda_handler", timed)  # noqa: B010 (a module of its own file)
    try:
        yield
    finally:
        setattr(module, "lambda_handler", handler)  # noqa: B010


def _bytes(lines: list[str]) -> int:
    """What CloudWatch Logs ingests for these lines (one event each, with its newline)."""
    return sum(len(line.encode()) + 1 for line in lines)


def _state_item_bytes(stack: LocalStack, merchant_id: str) -> int:
    """A merchant's state item as DynamoDB sizes it (names and values), with the lease."""
    import boto3

    found = boto3.client("dynamodb").get_item(
        TableName=stack.env["STATE_TABLE_NAME"], Key={"merchant_id": {"S": merchant_id}}
    )["Item"]
    item: dict[str, dict[str, Any]] = {name: dict(value) for name, value in found.items()}
    item.setdefault("lease_owner", {"S": "0" * 32})
    item.setdefault("lease_until_ms", {"N": "1800000000000"})
    return sum(len(name.encode()) + _attribute_bytes(value) for name, value in item.items())


def _attribute_bytes(value: dict[str, Any]) -> int:
    (kind, data), *_ = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "N":
        return len(str(data).lstrip("-").replace(".", "")) // 2 + 2
    if kind == "B":
        return len(data)
    if kind == "SS":
        return sum(len(s.encode()) for s in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _attribute_bytes(v) for k, v in data.items())
    return 1  # BOOL, NULL


def _heap_pass(stack: LocalStack, skus: int, say: Say) -> dict[str, float]:
    """The Python heap's peak (tracemalloc; the Clover and Hipoink simulators' threads
    included, an upper bound; moto serves from its own process) for one first sync and one
    idle poll, in MiB to two places (an idle poll's is tens of KiB); timed by nothing (the
    tracer slows everything)."""
    clover, _ = _sims(stack)
    say("… heap pass (tracemalloc): a first sync, then an idle poll")
    items = gas_station_catalog(skus, seed=999)
    stack.add_merchant("MHEAP0000001", "heap-token", "HEAP-0001", items=items)
    peaks = {}
    for phase in ("first sync", "idle"):
        clover.clock_offset_ms += INTERVAL_SECONDS * 1000
        stack.sqs.send_message(
            QueueUrl=stack.urls["PollQueue"],
            MessageBody=json.dumps({"merchant_id": "MHEAP0000001", "reason": "manual"}),
        )
        tracemalloc.start()
        stack.drain("PollQueue", "poller")
        peaks[phase] = round(tracemalloc.get_traced_memory()[1] / 2**20, 2)
        tracemalloc.stop()
        stack.drain("LabelQueue", "hipoink_sender")
    return peaks


def _webhook_processing_seconds(stack: LocalStack, merchant_id: str, say: Say) -> list[float]:
    """Change → label time when a poll is asked for at once (what a webhook does)."""
    from esl_sync.messages import PollRequest

    clover, _ = _sims(stack)
    say("… measuring change → label time for immediate polls")
    samples = []
    fuel = next(i for i in clover.items(merchant_id) if i.get("priceType") == "PER_UNIT")
    for k in range(5):
        clover.update_item(merchant_id, fuel["id"], price=300 + k)
        started = time.perf_counter()
        body = PollRequest(merchant_id=merchant_id, reason="manual").to_json()
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


# -- many merchants: the app-wide limits ---------------------------------------------------


def _idle_run(report: BenchReport, merchants: int, say: Say) -> None:
    """Many merchants, small catalogs: the app-wide limits must hold with no 429 we caused."""
    with LocalStack(aws_in_own_process=True) as stack:
        clover, _ = _sims(stack)
        say(f"… idle run: seeding {merchants} merchants")
        for n in range(merchants):
            # Only the idle cycle is measured: most catalogs are left empty, so that the
            # setup's first sync (label jobs included) stays short.
            items = convenience_store_catalog(2, seed=n) if n % 10 == 0 else []
            stack.add_merchant(f"MIDLE{n:07d}", f"idle-token-{n}", f"IDLE-{n:05d}", items=items)
        say("… idle run: first sync")
        stack.run_cycle()
        clover.reset_counters()
        clover.clock_offset_ms += INTERVAL_SECONDS * 1000
        say("… idle run: idle cycle")
        started = time.perf_counter()
        dispatcher: list[tuple[float, int]] = []
        with _handler_cpu("dispatcher", dispatcher):
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
            "dispatcher_cpu_ms": round(1000 * dispatcher[0][0], 1),
        }


# -- cold starts and memory, each function in a fresh process --------------------------------


def _cold_start_run(
    report: BenchReport,
    skus: int,
    layer: Path | None,
    runs: int,
    say: Say,
    functions: list[str] | None = None,
) -> None:
    """Every function's cold start with its sample event (the migrator: import only), and
    the poller's peak memory over a batch of five first syncs (what sizes its memory);
    with ``functions``, only theirs (and no batch)."""
    template = load_template()
    report.cold_start_layer = "built layer (make)" if layer else "layer from this environment"
    with LocalStack(aws_in_own_process=True) as stack, tempfile.TemporaryDirectory() as tmp:
        say(f"… cold starts, each a fresh process ({report.cold_start_layer})")
        if layer is None:
            layer = layer_from_environment(Path(tmp) / "layer")
        path = [layer, runtime_packages(Path(tmp) / "runtime")]
        stack.add_merchant(
            "MDEMO0000001", "demo-token", "STORE-DEMO-1", items=convenience_store_catalog(20)
        )
        stack.run_cycle()  # the sample poll is an idle poll of a synced merchant
        for function, logical_id in FUNCTIONS.items():
            if functions is not None and function not in functions:
                continue
            memory = _memory_mb(template, logical_id)
            env = lambda_environment(stack.env, function, logical_id, memory)
            event = None if function == "migrator" else REPO_ROOT / "events" / f"{function}.json"
            report.cold_starts.append(cold_start(function, env, path, event, runs=runs))
        if functions is not None:
            return
        say("… peak memory of a poller invocation of five first syncs")
        report.poller_batch_peak_rss_mib = _batch_peak(stack, path, skus, Path(tmp), template)


BATCH_POLLS = 5
"""Polls in the measured poller invocation: ``PollerBatchSize``'s default."""


def _batch_peak(
    stack: LocalStack,
    path: list[Path],
    skus: int,
    tmp: Path,
    template: dict[str, Any],
    polls: int = BATCH_POLLS,
) -> float:
    """The peak resident memory (VmHWM, MiB) of one poller invocation, in a fresh process,
    of ``polls`` first syncs of ``skus`` items each (gas stations, each its own
    catalog), overlapped as Lambda runs them (the poller's worker threads)."""
    records = []
    sample = json.loads((REPO_ROOT / "events" / "poller.json").read_text())["Records"][0]
    for n in range(polls):
        merchant_id = f"MP{polls}{skus:08d}{n}"
        items = gas_station_catalog(skus, seed=2000 + 100 * skus + 10 * polls + n)
        stack.add_merchant(
            merchant_id, f"peak-token-{polls}-{skus}-{n}", f"PEAK-{polls}-{skus}-{n}", items=items
        )
        body = {"merchant_id": merchant_id, "reason": "schedule"}
        records.append({**sample, "messageId": f"peak-{n}", "body": json.dumps(body)})
    event_file = tmp / f"batch-{polls}-{skus}.json"
    event_file.write_text(json.dumps({"Records": records}))
    memory = _memory_mb(template, "PollerFunction")
    env = lambda_environment(stack.env, "poller", "PollerFunction", memory)
    heavy = cold_start("poller", env, path, event_file, runs=1)
    stack.drain("PollQueue", "poller")  # the dispatcher's sample event queued polls
    synced = {r["merchant_id"]: len(stack.products(r["merchant_id"])) for r in map(_body, records)}
    if set(synced.values()) != {skus}:  # a poll that failed would measure less than a sync
        raise RuntimeError(f"the measured batch did not sync every item: {synced}")
    return heavy.peak_rss_mib


def _body(record: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(record["body"])
    return body


def run_batch_peaks(
    sizes: list[int], *, polls: int = BATCH_POLLS, say: Say = print
) -> dict[int, float]:
    """``bench --batch-peak``: the poller's peak memory (MiB) over one invocation of
    ``polls`` first syncs, for each catalog size of ``sizes`` (the layer as installed here)."""
    template = load_template()
    peaks: dict[int, float] = {}
    with LocalStack(aws_in_own_process=True) as stack, tempfile.TemporaryDirectory() as tmp:
        layer = layer_from_environment(Path(tmp) / "layer")
        path = [layer, runtime_packages(Path(tmp) / "runtime")]
        for skus in sizes:
            peaks[skus] = _batch_peak(stack, path, skus, Path(tmp), template, polls)
            say(f"poller invocation of {polls} first syncs of {skus} items each:")
            say(f"  peak {peaks[skus]} MiB")
    return peaks


def _memory_mb(template: dict[str, Any], logical_id: str) -> int:
    props = resource(template, logical_id)["Properties"]
    default = template.get("Globals", {}).get("Function", {}).get("MemorySize", 128)
    return int(resolve(template, props.get("MemorySize", default)))


def _start_layer_build(folder: Path, say: Say) -> Any:
    """The layer for this machine, built by its Makefile in the background."""
    from concurrent.futures import ThreadPoolExecutor

    say("… layer build started (cold starts)")
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(build_host_layer, folder)
    pool.shutdown(wait=False)
    return future


def _start_sam_build(tmp: Path, say: Say) -> subprocess.Popen[bytes] | None:
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


def _package_sizes(build: subprocess.Popen[bytes], tmp: Path, say: Say) -> dict[str, float]:
    """Unzipped MiB of the layer and of each function after ``sam build``."""
    if build.wait(timeout=900) != 0:
        say("  (sam build failed: package sizes skipped)")
        return {}
    say("… sam build done")
    folder = tmp / "build"
    return {entry.name: _mib(entry) for entry in sorted(folder.iterdir()) if entry.is_dir()}


def _mib(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 2)


# -- the cost model and the summary ---------------------------------------------------------


def _costs(report: BenchReport, measured: dict[str, Any]) -> None:
    template = load_template()
    # The dispatcher's CPU per merchant: what one more merchant adds to a tick (between the
    # main run's ticks and the idle run's), not the tick's fixed work shared out.
    tick_ms = measured["dispatcher_cpu_ms_per_merchant"]
    many = report.idle_run.get("merchants", 0)
    if many > report.merchants:
        slope = (report.idle_run["dispatcher_cpu_ms"] - tick_ms) / (many - report.merchants)
        measured["dispatcher_cpu_ms_per_merchant"] = max(0.0, slope)
    else:
        measured["dispatcher_cpu_ms_per_merchant"] = tick_ms / report.merchants
    phases = {p.phase: p for p in report.phases}
    poller = template["Resources"]["PollerFunction"]["Properties"]
    event = poller["Events"]["PollQueueEvent"]["Properties"]
    share = template["Mappings"]["CloverShare"]
    concurrency = template["Parameters"]["PollerMaximumConcurrency"]["Default"]
    inputs = bench_cost.CostInputs(
        interval_seconds=INTERVAL_SECONDS,
        sweep_every=int(poller["Environment"]["Variables"]["CLOVER_CLEANUP_EVERY_N_POLLS"]),
        polls_per_invocation=float(resolve(template, event["BatchSize"])),
        workers_per_invocation=int(share[str(concurrency)].get("InstanceInFlight", 1)),
        poller_memory_mb=_memory_mb(template, "PollerFunction"),
        idle=_kind(phases["idle"]),
        changed=_kind(phases["changed"]),
        sweep=_kind(phases["sweep"]),
        dispatcher_memory_mb=_memory_mb(template, "DispatcherFunction"),
        sender_memory_mb=_memory_mb(template, "HipoinkSenderFunction"),
        verify_interval_hours=int(
            poller["Environment"]["Variables"]["LABEL_VERIFY_INTERVAL_HOURS"]
        ),
        verify_pages=math.ceil(report.skus / VERIFY_PAGE_SIZE),  # at most every item labelled
        **measured,
    )
    report.cost_inputs = asdict(inputs)
    report.cost = [*bench_cost.cost_lines(inputs), bench_cost.xray_line(inputs)]
    cold = {c.function: c for c in report.cold_starts}
    first, idle, bulk_idle = (
        phases["first sync"],
        phases["idle"],
        phases["idle after bulk edit"],
    )
    report.summary = {
        "idle_clover_requests_per_poll": idle.clover_requests_per_poll,
        "idle_after_bulk_edit_clover_requests_per_poll": bulk_idle.clover_requests_per_poll,
        "idle_dynamodb_calls_per_poll": idle.dynamodb_calls_per_poll,
        "first_sync_cpu_ms_per_1k_items": first.cpu_ms_per_1000_items,
        "sweep_cpu_ms_per_1k_items": phases["sweep"].cpu_ms_per_1000_items,
        "idle_cpu_ms_per_poll": idle.cpu_ms_per_poll,
        "idle_log_bytes_per_poll": idle.log_bytes_per_poll,
        "poller_cold_start_ms": round(cold["poller"].cpu_ms, 1),
        "poller_batch_peak_rss_mib": report.poller_batch_peak_rss_mib,
        "cost_usd_per_store_month": round(bench_cost.total(report.cost[:-1]), 4),
        "cost_estimated_inputs": "; ".join(bench_cost.ESTIMATES),
        "layer_mib": report.package_mib.get("CommonLayer"),
    }


def _kind(phase: PhaseCost) -> bench_cost.PollKind:
    """The phase's poll as the cost model takes it; its verify requests apart (each its own
    SQS send), since a month has one per ``LABEL_VERIFY_INTERVAL_HOURS``, not one a sweep."""
    n = max(phase.polls, 1)
    calls = dict(phase.aws_calls_per_poll)
    if phase.label_verifies:
        sends = calls.get("sqs:SendMessageBatch", 0.0) - phase.label_verifies / n
        calls["sqs:SendMessageBatch"] = max(0.0, sends)
    return bench_cost.PollKind(
        aws_calls=calls,
        cpu_ms=phase.cpu_ms_per_poll,
        clover_requests=phase.clover_requests_per_poll,
        db_round_trips=phase.db_round_trips_per_poll,
        log_bytes=phase.log_bytes_per_poll - phase.label_verify_log_bytes / n,
        label_jobs=phase.label_jobs / n,
        verifies=phase.label_verifies / n,
    )


# -- output ----------------------------------------------------------------------------------


def print_report(report: BenchReport, say: Say = print) -> None:
    say("")
    say(f"esl-sync bench — {report.date}, {report.machine}")
    say(f"{report.merchants} merchants × {report.skus} SKUs; CPU ms: median [lowest–highest]")
    header = (
        f"{'poll':<21}{'polls':>6}{'items/poll':>11}{'Clover':>7}{'DynamoDB':>9}{'DB trips':>9}"
        f"{'CPU ms/poll':>26}{'ms/1k items':>12}{'log B':>7}{'jobs':>6}"
    )
    say(header)
    say("-" * len(header))
    for p in report.phases:
        per_k = f"{p.cpu_ms_per_1000_items}" if p.items_per_poll >= 100 else "-"
        cpu = f"{p.cpu_ms_per_poll} [{p.cpu_ms_per_poll_low}–{p.cpu_ms_per_poll_high}]"
        say(
            f"{p.phase:<21}{p.polls:>6}{p.items_per_poll:>11}{p.clover_requests_per_poll:>7}"
            f"{p.dynamodb_calls_per_poll:>9}{p.db_round_trips_per_poll:>9}{cpu:>26}{per_k:>12}"
            f"{p.log_bytes_per_poll:>7.0f}{p.label_jobs:>6}"
        )
    say("")
    say("AWS calls per poll (poller):")
    for p in report.phases:
        say(f"  {p.phase:<21}{json.dumps(p.aws_calls_per_poll)}")
    heap = json.dumps(report.heap_mib)
    say(f"Python heap peak MiB (tracemalloc pass, simulators included, moto apart): {heap}")
    say("")
    print_cold_starts(report, say)
    say(f"poller invocation of five first syncs: peak {report.poller_batch_peak_rss_mib} MiB")
    say("")
    say(f"one store's month (prices of {bench_cost.PRICES_AS_OF}, us-east-1, arm64):")
    for line in report.cost:
        say(f"  {line.item:<28}${line.usd:>8.4f}  {line.how}")
    say(f"  {'total (without X-Ray)':<28}${report.summary['cost_usd_per_store_month']:>8.4f}")
    say(f"  estimates (the rest is counted or measured): {'; '.join(bench_cost.ESTIMATES)}")
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
    if report.package_mib:
        say(f"built sizes MiB: {json.dumps(report.package_mib)}")
    say(f"summary: {json.dumps(report.summary)}")


def print_cold_starts(report: BenchReport, say: Say = print) -> None:
    """The cold starts' table."""
    say(f"cold starts: fresh process each, {report.cold_start_layer}; CPU and wall ms, medians")
    say(
        f"{'function':<16}{'import CPU':>11}{'wall':>7}{'1st call CPU':>13}{'wall':>7}"
        f"{'total CPU [spread]':>22}{'peak MiB':>9}"
    )
    for c in report.cold_starts:
        call_cpu = "-" if c.invoke_cpu_ms is None else f"{c.invoke_cpu_ms}"
        call_wall = "-" if c.invoke_wall_ms is None else f"{c.invoke_wall_ms}"
        total = f"{c.cpu_ms:.1f} [{c.cpu_low_ms}–{c.cpu_high_ms}]"
        say(
            f"{c.function:<16}{c.import_cpu_ms:>11}{c.import_wall_ms:>7}{call_cpu:>13}"
            f"{call_wall:>7}{total:>22}{c.peak_rss_mib:>9}"
        )


def run_from_args(args: argparse.Namespace) -> int:
    say: Say = lambda text: print(text, flush=True)  # noqa: E731
    if args.cold_start_only:
        cold = run_cold_starts(
            args.function or ["poller"], build=not args.no_build, runs=args.runs, say=say
        )
        print_cold_starts(cold, say)
        say(f"summary: {json.dumps(cold.summary)}")
        if args.json:
            args.json.write_text(json.dumps(asdict(cold), indent=2, default=str))
        return 0
    if args.batch_peak:
        run_batch_peaks([args.skus], say=say)
        return 0
    if args.cpu_only:
        run_cpu_only(merchants=args.merchants, skus=args.skus, say=say)
        return 0
    if args.stages:
        split = run_stages(merchants=args.merchants, skus=args.skus, say=say)
        if args.json:
            args.json.write_text(json.dumps(asdict(split), indent=2))
        return 0
    report = run_bench(
        merchants=args.merchants,
        skus=args.skus,
        idle_merchants=args.idle_merchants,
        build=not args.no_build,
        say=say,
    )
    print_report(report, say)
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0
