"""The benchmark's cost model: its arithmetic, on made-up counts (the bench supplies real ones)."""

from __future__ import annotations

import pytest

from devkit import bench_cost as cost


def kind(**over: object) -> cost.PollKind:
    values: dict[str, object] = {
        "aws_calls": {"dynamodb:UpdateItem": 2.0},
        "cpu_ms": 4.0,
        "clover_requests": 1.0,
        "db_round_trips": 4.0,
        "log_bytes": 100.0,
    }
    return cost.PollKind(**{**values, **over})  # type: ignore[arg-type]


def inputs(**over: object) -> cost.CostInputs:
    values: dict[str, object] = {
        "interval_seconds": 300,
        "sweep_every": 10,
        "polls_per_invocation": 5.0,
        "workers_per_invocation": 5,
        "poller_memory_mb": 256,
        "state_item_bytes": 700,
        "idle": kind(),
        "changed": kind(label_jobs=1.0, aws_calls={"dynamodb:UpdateItem": 2.0, "sqs:Send": 1.0}),
        "sweep": kind(clover_requests=3.0, cpu_ms=40.0),
    }
    return cost.CostInputs(**{**values, **over})  # type: ignore[arg-type]


def test_a_month_of_polls_is_made_of_idle_changed_and_sweeping_ones() -> None:
    mix = cost.poll_mix(inputs())
    assert sum(mix.values()) == pytest.approx(8640)
    assert mix["sweep"] == pytest.approx(864)
    assert mix["changed"] == cost.CHANGED_POLLS_PER_DAY * 30


@pytest.mark.parametrize(("size", "units"), [(1, 1), (1024, 1), (1025, 2), (4096, 4)])
def test_a_write_costs_a_unit_per_started_kib(size: int, units: int) -> None:
    assert cost.write_units(size) == units


def test_the_polls_of_a_batch_overlap_their_waits_not_their_cpu() -> None:
    alone = cost.billed_ms_per_poll(kind(), inputs(workers_per_invocation=1))
    overlapped = cost.billed_ms_per_poll(kind(), inputs())
    cpu = 4.0 * cost.LAMBDA_MB_PER_VCPU / 256
    assert alone == pytest.approx(cpu + 120 + 2 * 6 + 4 * 1.5)
    assert overlapped == pytest.approx(alone / 5)
    busy = kind(cpu_ms=100.0, clover_requests=0.0, aws_calls={}, db_round_trips=0.0)
    assert cost.billed_ms_per_poll(busy, inputs()) == pytest.approx(100 * 1769 / 256)


def test_dynamodb_writes_are_billed_by_the_items_size() -> None:
    small = {line.item: line.usd for line in cost.cost_lines(inputs())}
    big = {line.item: line.usd for line in cost.cost_lines(inputs(state_item_bytes=1500))}
    assert big["DynamoDB (poller)"] == pytest.approx(2 * small["DynamoDB (poller)"])
    assert small["DynamoDB (poller)"] == pytest.approx(8640 * 2 * 0.625e-6)


def test_the_total_is_the_sum_of_the_lines() -> None:
    lines = cost.cost_lines(inputs())
    assert cost.total(lines) == pytest.approx(sum(line.usd for line in lines))
    assert all(line.usd >= 0 for line in lines)
