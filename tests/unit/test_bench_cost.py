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


def test_a_month_has_one_verify_per_interval_not_one_per_sweep() -> None:
    """The bench's sweeps each queue a verify (every merchant's first); the month has one
    per ``LABEL_VERIFY_INTERVAL_HOURS`` (a claim), or none when the bench saw none."""
    swept = kind(clover_requests=3.0, cpu_ms=40.0, verifies=1.0)
    mix = cost.poll_mix(inputs())
    assert mix["sweep"] == 864
    weekly = inputs(sweep=swept, verify_interval_hours=168, verify_pages=20)
    assert cost.verifies_per_month(weekly, mix) == pytest.approx(720 / 168)
    daily = inputs(sweep=swept, verify_interval_hours=24, verify_pages=20)
    assert cost.verifies_per_month(daily, mix) == pytest.approx(30)
    assert cost.verifies_per_month(inputs(verify_interval_hours=24, verify_pages=20), mix) == 0
    off = inputs(sweep=swept, verify_interval_hours=0, verify_pages=20)
    assert cost.verifies_per_month(off, mix) == 0
    rare = inputs(sweep=swept, sweep_every=100_000, verify_interval_hours=1, verify_pages=20)
    assert cost.verifies_per_month(rare, cost.poll_mix(rare)) == pytest.approx(8640 / 100_000)


def test_a_verify_costs_the_sender_its_wait_on_every_page() -> None:
    """Mostly the sender waiting on Hipoink, page by page (an estimate per page)."""
    swept = kind(clover_requests=3.0, cpu_ms=40.0, verifies=1.0)

    def line(pages: int) -> float:
        lines = cost.cost_lines(
            inputs(sweep=swept, verify_interval_hours=24, verify_pages=pages, sender_memory_mb=512)
        )
        [verify] = [x.usd for x in lines if x.item == "label verifies (sender)"]
        return verify

    seconds = 20 * cost.HIPOINK_QUERY_MS_PER_PAGE / 1000
    lambda_wait = 30 * seconds * 0.5 * cost.LAMBDA_USD_PER_GB_SECOND
    assert line(20) > lambda_wait
    assert line(20) - line(10) == pytest.approx(lambda_wait / 2)
