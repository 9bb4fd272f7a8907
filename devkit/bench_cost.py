"""The monthly AWS cost of one store, computed from what the benchmark counted and measured.

Every price is a named constant with the date it was read (AWS list prices, us-east-1,
arm64); every input that a local run cannot measure is a named estimate and says so. The
rest comes from the benchmark: AWS calls per poll by kind (counted by an observer of each
call), the DynamoDB item's size, log bytes per poll, CPU per poll, Clover requests and
database round trips.

How a month of one store is made of polls: ``P = 2,592,000 / interval`` polls; every
``sweep_every``-th one sweeps; :data:`CHANGED_POLLS_PER_DAY` find changes; the rest are idle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

PRICES_AS_OF = "2026-12-01"
"""When the prices below were read (us-east-1 list prices, on-demand, arm64)."""
LAMBDA_USD_PER_GB_SECOND = 0.0000133334  # arm64, first 6 billion GB-s a month
LAMBDA_USD_PER_REQUEST = 0.20 / 1e6
SQS_STANDARD_USD_PER_REQUEST = 0.40 / 1e6  # each 64 KiB chunk of a request is one request
SQS_FIFO_USD_PER_REQUEST = 0.50 / 1e6
DYNAMODB_USD_PER_WRITE_UNIT = 0.625 / 1e6  # on-demand: one unit per KiB written
DYNAMODB_USD_PER_READ_UNIT = 0.125 / 1e6  # on-demand: one unit per 4 KiB strongly read
KMS_USD_PER_REQUEST = 0.03 / 10_000
LOGS_USD_PER_GB = 0.50  # CloudWatch Logs ingestion (standard class)
XRAY_USD_PER_TRACE = 5.00 / 1e6  # traces recorded (the first 100,000 a month are free)

# -- estimates: what a local run cannot measure ------------------------------------------
CHANGED_POLLS_PER_DAY = 6
"""Polls of one store a day that find changes (fuel repriced several times a day): an
estimate; every other poll is idle or a sweep."""
LAMBDA_MB_PER_VCPU = 1769
"""Lambda gives a function one vCPU at 1,769 MB and a proportional share below it (AWS
documentation): CPU time measured here is stretched by ``1769 / memory`` in AWS. Graviton
and this machine are taken as equally fast per core (an estimate)."""
ROUND_TRIP_MS = {"clover": 120.0, "dynamodb": 6.0, "postgres": 1.5, "sqs": 12.0}
"""Wall time of one round trip from a poller in AWS (estimates): Clover's API over the
internet, DynamoDB and SQS in the region, Postgres in the same region and zone."""
PLATFORM_LOG_BYTES_PER_INVOCATION = 360
"""Lambda's own START, END and REPORT lines (with the X-Ray trace id) per invocation."""
LOG_EVENT_OVERHEAD_BYTES = 26
"""CloudWatch Logs counts 26 bytes more per log event (its PutLogEvents size rule);
taken as billed too, to err on the high side."""
HIPOINK_QUERY_MS_PER_PAGE = 1000.0
"""Wall time of one ``product/query`` page of a label verify (100 products), the sender
waiting on Hipoink: an estimate, taken as long as a label job's call (≈ 1 s)."""
VERIFY_LOG_BYTES = 1000
"""A verify's log lines: the poller's "label verify queued" (≈ 250 B, the bench takes it
out of the sweep's bytes) and the sender's result with its counts and codes (≈ 700 B)."""
KMS_DECRYPTS_PER_STORE_MONTH = 300
"""Token decryptions: one per token version per poller instance (cached for the life of
the process); instances live hours, a v2 token is refreshed a few times a day (estimate)."""
XRAY_RESERVOIR_PER_SECOND = 1
XRAY_TRACED_SHARE = 0.05
"""X-Ray's default sampling rule: the first request each second, then 5 % of the rest."""
FLEET_STORES = 1000
"""The fleet X-Ray's share is shown for (its reservoir is per account, not per store)."""

ESTIMATES = (
    f"changed polls a day ({CHANGED_POLLS_PER_DAY})",
    "Lambda CPU share by memory, Graviton as fast as this machine",
    "round trips in AWS (" + ", ".join(f"{k} {v:g} ms" for k, v in ROUND_TRIP_MS.items()) + ")",
    f"Lambda's own log bytes ({PLATFORM_LOG_BYTES_PER_INVOCATION} B an invocation)",
    f"a verify's Hipoink page ({HIPOINK_QUERY_MS_PER_PAGE / 1000:g} s)",
    f"KMS decrypts ({KMS_DECRYPTS_PER_STORE_MONTH} a month)",
    f"X-Ray's fleet ({FLEET_STORES} stores)",
)
"""The inputs of the cost that a local run cannot count or measure (the bench prints them)."""


@dataclass
class PollKind:
    """What one poll of a kind costs, as the benchmark measured it."""

    aws_calls: Mapping[str, float]  # by action, e.g. "dynamodb:UpdateItem": 2.0
    cpu_ms: float
    clover_requests: float
    db_round_trips: float
    log_bytes: float
    label_jobs: float = 0.0  # label jobs the poll queued (verify requests apart)
    verifies: float = 0.0  # label verify requests the poll queued (each its own SQS send)


@dataclass
class CostInputs:
    interval_seconds: int
    sweep_every: int
    polls_per_invocation: float
    workers_per_invocation: int
    poller_memory_mb: int
    state_item_bytes: int
    idle: PollKind
    changed: PollKind
    sweep: PollKind
    dispatcher_calls_per_merchant: Mapping[str, float] = field(default_factory=dict)
    dispatcher_cpu_ms_per_merchant: float = 0.0
    dispatcher_memory_mb: int = 512
    sender_cpu_ms_per_job: float = 0.0
    sender_log_bytes_per_job: float = 0.0
    sender_memory_mb: int = 512
    verify_interval_hours: int = 168  # LABEL_VERIFY_INTERVAL_HOURS: at most one verify as often
    verify_pages: float = 0.0  # product/query pages a store's verify reads (100 products each)


@dataclass(frozen=True)
class CostLine:
    item: str
    usd: float
    how: str


def polls_per_month(interval_seconds: int) -> float:
    return 2_592_000 / interval_seconds


def write_units(item_bytes: int) -> int:
    """DynamoDB's write units for one write of an item this large (1 KiB each)."""
    return max(1, math.ceil(item_bytes / 1024))


def poll_mix(inputs: CostInputs) -> dict[str, float]:
    """Polls of each kind in a month."""
    p = polls_per_month(inputs.interval_seconds)
    sweeps = p / inputs.sweep_every
    changed = min(CHANGED_POLLS_PER_DAY * 30, p - sweeps)
    return {"idle": p - sweeps - changed, "changed": changed, "sweep": sweeps}


def _wall_ms(kind: PollKind, memory_mb: int) -> tuple[float, float]:
    """(CPU as Lambda stretches it, that plus the poll's round trips) in milliseconds."""
    cpu = kind.cpu_ms * max(1.0, LAMBDA_MB_PER_VCPU / memory_mb)
    calls = kind.aws_calls
    waits = (
        kind.clover_requests * ROUND_TRIP_MS["clover"]
        + sum(n for a, n in calls.items() if a.startswith("dynamodb:")) * ROUND_TRIP_MS["dynamodb"]
        + kind.db_round_trips * ROUND_TRIP_MS["postgres"]
        + sum(n for a, n in calls.items() if a.startswith("sqs:")) * ROUND_TRIP_MS["sqs"]
    )
    return cpu, cpu + waits


def billed_ms_per_poll(kind: PollKind, inputs: CostInputs) -> float:
    """The Lambda time one poll adds to its invocation: the polls of a batch overlap their
    waits (``workers_per_invocation`` at a time) but not their CPU."""
    cpu, wall = _wall_ms(kind, inputs.poller_memory_mb)
    overlap = max(1.0, min(inputs.polls_per_invocation, inputs.workers_per_invocation))
    return max(cpu, wall / overlap)


def cost_lines(inputs: CostInputs) -> list[CostLine]:
    """One store's month, line by line (poller, dispatcher's share, label jobs)."""
    mix = poll_mix(inputs)
    kinds = {"idle": inputs.idle, "changed": inputs.changed, "sweep": inputs.sweep}
    polls = sum(mix.values())
    invocations = polls / inputs.polls_per_invocation
    gb = inputs.poller_memory_mb / 1024
    lines: list[CostLine] = []

    seconds = sum(mix[k] * billed_ms_per_poll(kinds[k], inputs) for k in kinds) / 1000
    lines.append(
        CostLine(
            "Lambda poller (duration)",
            seconds * gb * LAMBDA_USD_PER_GB_SECOND,
            f"{seconds:,.0f} s × {gb:.3g} GB: CPU × {LAMBDA_MB_PER_VCPU}/MB plus round trips,"
            f" waits overlapped {inputs.workers_per_invocation} at a time",
        )
    )
    lines.append(
        CostLine(
            "Lambda poller (requests)",
            invocations * LAMBDA_USD_PER_REQUEST,
            f"{invocations:,.0f} invocations ({inputs.polls_per_invocation:g} polls each)",
        )
    )
    units = write_units(inputs.state_item_bytes)
    writes = sum(mix[k] * _calls(kinds[k], "dynamodb:", writes=True) for k in kinds)
    reads = sum(mix[k] * _calls(kinds[k], "dynamodb:", writes=False) for k in kinds)
    lines.append(
        CostLine(
            "DynamoDB (poller)",
            writes * units * DYNAMODB_USD_PER_WRITE_UNIT + reads * DYNAMODB_USD_PER_READ_UNIT,
            f"{writes:,.0f} writes × {units} unit(s) (item {inputs.state_item_bytes} B)"
            f" + {reads:,.0f} strong reads",
        )
    )
    sends = sum(mix[k] * _calls(kinds[k], "sqs:") for k in kinds)
    esm = 2 * invocations  # the event source's ReceiveMessage and DeleteMessageBatch
    lines.append(
        CostLine(
            "SQS poll queue",
            (polls / 10 + esm) * SQS_STANDARD_USD_PER_REQUEST,
            "dispatcher sends in tens; one receive and one delete per invocation",
        )
    )
    log_bytes = sum(mix[k] * kinds[k].log_bytes for k in kinds) + invocations * (
        PLATFORM_LOG_BYTES_PER_INVOCATION + 3 * LOG_EVENT_OVERHEAD_BYTES
    )
    lines.append(
        CostLine(
            "CloudWatch Logs (poller)",
            log_bytes / 1e9 * LOGS_USD_PER_GB,
            f"{log_bytes / polls:,.0f} B per poll (log lines and EMF, Lambda's own lines)",
        )
    )
    kms = KMS_DECRYPTS_PER_STORE_MONTH + sum(mix[k] * _calls(kinds[k], "kms:") for k in kinds)
    lines.append(
        CostLine("KMS", kms * KMS_USD_PER_REQUEST, f"{kms:,.0f} requests (decrypts estimated)")
    )
    lines.append(_dispatcher_line(inputs, polls))
    lines.append(_label_jobs_line(inputs, mix, sends))
    lines.append(_verifies_line(inputs, mix))
    return lines


def verifies_per_month(inputs: CostInputs, mix: Mapping[str, float]) -> float:
    """A sweep poll queues a verify at most once per ``verify_interval_hours`` (a claim in
    Postgres): the bench's sweeps, each a merchant's first, all queued one, so the month
    has one per interval, or one per sweep if sweeps are rarer; none if the bench saw none
    (``LABEL_VERIFY_INTERVAL_HOURS`` 0)."""
    if not inputs.sweep.verifies or not inputs.verify_interval_hours:
        return 0.0
    return min(mix["sweep"] * inputs.sweep.verifies, 720 / inputs.verify_interval_hours)


def _verifies_line(inputs: CostInputs, mix: Mapping[str, float]) -> CostLine:
    """Label verifies: the FIFO send, receive and delete, one sender invocation each that
    waits on Hipoink for every page (:data:`HIPOINK_QUERY_MS_PER_PAGE`), its log lines
    (:data:`VERIFY_LOG_BYTES`, the poller's and the sender's)."""
    verifies = verifies_per_month(inputs, mix)
    seconds = inputs.verify_pages * HIPOINK_QUERY_MS_PER_PAGE / 1000
    usd = verifies * (
        3 * SQS_FIFO_USD_PER_REQUEST
        + LAMBDA_USD_PER_REQUEST
        + seconds * inputs.sender_memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND
        + (VERIFY_LOG_BYTES + PLATFORM_LOG_BYTES_PER_INVOCATION) / 1e9 * LOGS_USD_PER_GB
    )
    return CostLine(
        "label verifies (sender)",
        usd,
        f"{verifies:,.0f} verifies of {inputs.verify_pages:g} pages (≈ {seconds:g} s of Hipoink)"
        f" each: send, receive, delete, one sender invocation",
    )


def _calls(kind: PollKind, prefix: str, *, writes: bool | None = None) -> float:
    total = 0.0
    for action, n in kind.aws_calls.items():
        if not action.startswith(prefix):
            continue
        is_write = action.split(":")[1].startswith(("Update", "Put", "Delete", "BatchWrite"))
        if writes is None or writes == is_write:
            total += n
    return total


def _dispatcher_line(inputs: CostInputs, polls: float) -> CostLine:
    """What one more merchant adds to the dispatcher's tick: its state read (in batches of
    100, a projection without tokens, eventually consistent: half a read unit) and the CPU
    it adds (measured between two fleet sizes). Its sends are in the poll queue's line."""
    reads = 0.5 if inputs.dispatcher_calls_per_merchant.get("dynamodb:BatchGetItem") else 0.0
    cpu = inputs.dispatcher_cpu_ms_per_merchant * max(
        1.0, LAMBDA_MB_PER_VCPU / inputs.dispatcher_memory_mb
    )
    usd = polls * (
        reads * DYNAMODB_USD_PER_READ_UNIT
        + cpu / 1000 * inputs.dispatcher_memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND
    )
    return CostLine(
        "dispatcher (per merchant)",
        usd,
        f"a state read and {inputs.dispatcher_cpu_ms_per_merchant:.2f} ms of CPU",
    )


def _label_jobs_line(inputs: CostInputs, mix: Mapping[str, float], sends: float) -> CostLine:
    """Label jobs of the changed polls: the FIFO send (counted above as poller calls),
    receive and delete, one sender invocation each, its CPU and log lines."""
    jobs = mix["changed"] * inputs.changed.label_jobs + mix["sweep"] * inputs.sweep.label_jobs
    cpu = inputs.sender_cpu_ms_per_job * max(1.0, LAMBDA_MB_PER_VCPU / inputs.sender_memory_mb)
    usd = (
        (sends + 2 * jobs) * SQS_FIFO_USD_PER_REQUEST
        + jobs * LAMBDA_USD_PER_REQUEST
        + jobs * (cpu + 1000) / 1000 * inputs.sender_memory_mb / 1024 * LAMBDA_USD_PER_GB_SECOND
        + jobs
        * (inputs.sender_log_bytes_per_job + PLATFORM_LOG_BYTES_PER_INVOCATION)
        / 1e9
        * LOGS_USD_PER_GB
    )
    return CostLine(
        "label jobs (FIFO, sender)",
        usd,
        f"{jobs:,.0f} jobs: send, receive, delete, one sender invocation (≈ 1 s of Hipoink) each",
    )


def xray_line(inputs: CostInputs, stores: int = FLEET_STORES) -> CostLine:
    """X-Ray, shown apart: its sampling depends on the fleet's request rate, not on one
    store. The poller's invocations of ``stores`` stores, sampled by the default rule."""
    seconds = 2_592_000
    invocations = stores * polls_per_month(inputs.interval_seconds) / inputs.polls_per_invocation
    reservoir = min(invocations, XRAY_RESERVOIR_PER_SECOND * seconds)
    traces = reservoir + XRAY_TRACED_SHARE * (invocations - reservoir)
    return CostLine(
        "X-Ray (apart)",
        traces / stores * XRAY_USD_PER_TRACE,
        f"{traces / stores:,.0f} traces per store at {stores:,} stores (1/s, then 5 %)",
    )


def total(lines: list[CostLine]) -> float:
    return sum(line.usd for line in lines)
