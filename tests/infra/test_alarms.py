"""Every alarm is right at every allowed sync interval.

The dispatcher emits its fleet gauges once per tick of the schedule, so an alarm on one of
them sees data only once per interval: with a period shorter than that, most periods are
empty (missing data), and an alarm treating missing data as breaching fires while all is
well, or one treating it as fine clears while all is wrong. The alarms on those gauges are
checked here by simulating CloudWatch's documented evaluation over days of ticks (late
ticks included), at every allowed interval: a healthy fleet never alarms, a broken one
alarms and stays in alarm, a stopped dispatcher is noticed. The simulation is checked to
catch the period the template used to have (300 s for every interval).

CloudWatch's evaluation, as documented ("How alarm state is evaluated when data is
missing"): it retrieves more periods than EvaluationPeriods (the evaluation range); if at
least DatapointsToAlarm of them hold data, the most recent EvaluationPeriods datapoints
decide and missing data is ignored; otherwise the last EvaluationPeriods periods are
filled per TreatMissingData. How many extra periods, and whether the period in progress
counts, is not documented: every combination below must hold.
"""

from __future__ import annotations

import bisect
import inspect
import random
import re
from dataclasses import dataclass
from itertools import product
from typing import Any

import pytest

from esl_sync.settings import Settings
from esl_sync.sync.fleet import report_fleet_health

pytestmark = pytest.mark.infra

Template = dict[str, Any]
TICK_GAUGES = set(re.findall(r'\("(\w+)", MetricUnit', inspect.getsource(report_fleet_health)))
DAY = 86_400


@dataclass(frozen=True)
class Alarm:
    period: int
    evaluation_periods: int
    datapoints_to_alarm: int
    missing: str
    statistic: str
    threshold: float


def intervals(template: Template) -> list[int]:
    return [int(v) for v in template["Parameters"]["SyncIntervalSeconds"]["AllowedValues"]]


def resolve(template: Template, value: Any, interval: int) -> Any:
    if isinstance(value, dict) and "Fn::FindInMap" in value:
        table, key, attribute = value["Fn::FindInMap"]
        assert key == {"Ref": "SyncIntervalSeconds"}, value
        return template["Mappings"][table][str(interval)][attribute]
    assert not isinstance(value, dict), f"unresolved {value}"
    return value


def alarm_at(template: Template, props: dict[str, Any], interval: int) -> Alarm:
    evaluation = int(resolve(template, props["EvaluationPeriods"], interval))
    return Alarm(
        period=int(resolve(template, props["Period"], interval)),
        evaluation_periods=evaluation,
        datapoints_to_alarm=int(props.get("DatapointsToAlarm", evaluation)),
        missing=props.get("TreatMissingData", "missing"),
        statistic=props["Statistic"],
        threshold=float(props["Threshold"]),
    )


def gauge_alarms(template: Template) -> dict[str, dict[str, Any]]:
    alarms = {
        name: r["Properties"]
        for name, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    return {n: p for n, p in alarms.items() if p.get("MetricName") in TICK_GAUGES}


# ---------------------------------------------------------------- the simulation


def latest_arrival(template: Template) -> int:
    """How late a tick's gauges can come: the schedule retries for MaximumEventAgeInSeconds,
    and the dispatcher emits them when it ends, within its Timeout."""
    retry = template["Resources"]["DispatchSchedule"]["Properties"]["Target"]["RetryPolicy"]
    timeout = template["Resources"]["DispatcherFunction"]["Properties"]["Timeout"]
    return int(retry["MaximumEventAgeInSeconds"]) + int(timeout)


@dataclass(frozen=True)
class Model:
    """What CloudWatch does not document, and how the ticks fall."""

    extra_periods: int  # periods retrieved beyond EvaluationPeriods (the evaluation range)
    in_progress: bool  # whether the period in progress is evaluated too
    offset: int  # where the schedule's ticks fall against the period boundaries
    seed: int  # how late each tick is (uniform, up to the latest possible)


MODELS = [Model(*m) for m in product((1, 3), (False, True), (0, 1799), (1, 2))]


def arrivals(interval: int, late: int, model: Model, until: int, stop_at: int | None) -> list[int]:
    """When the gauges arrive (sorted): every interval, each up to ``late`` seconds late."""
    rng = random.Random(model.seed)
    ticks = range(model.offset, until, interval)
    return sorted(t + rng.randint(0, late) for t in ticks if stop_at is None or t < stop_at)


def states(
    alarm: Alarm, times: list[int], value: float, model: Model, start: int, until: int
) -> list[tuple[int, str]]:
    """The alarm's state at every minute from ``start`` (every gauge carrying ``value``)."""
    period, n, m = alarm.period, alarm.evaluation_periods, alarm.datapoints_to_alarm
    state, seen = "INSUFFICIENT_DATA", []
    for now in range(start, until, 60):
        last = now // period - (0 if model.in_progress else 1)
        points: list[float | None] = []
        for index in range(last - n - model.extra_periods + 1, last + 1):
            low, high = index * period, min((index + 1) * period, now)
            count = bisect.bisect_left(times, high) - bisect.bisect_left(times, low)
            total = value if alarm.statistic == "Maximum" else value * count
            points.append(total if count else None)
        actual = [p for p in points if p is not None]
        if len(actual) >= m:  # enough data: missing periods are skipped
            decided: list[bool | None] = [p > alarm.threshold for p in actual[-n:]]
        else:
            fill = {"breaching": True, "notBreaching": False}.get(alarm.missing)
            decided = [fill if p is None else p > alarm.threshold for p in points[-n:]]
        if None not in decided:
            state = "ALARM" if sum(bool(d) for d in decided) >= m else "OK"
        seen.append((now, state))
    return seen


def problems(alarm: Alarm, interval: int, late: int, *, breaching_when_stopped: bool) -> list[str]:
    """What goes wrong with this alarm at this interval, under any model."""
    found = []
    until = max(DAY, 12 * alarm.period * (alarm.evaluation_periods + 5))
    for model in MODELS:
        # Evaluated once every period the evaluation range can reach has had its ticks.
        reach = alarm.evaluation_periods + model.extra_periods + 1
        settle = model.offset + late + reach * alarm.period
        stop = settle + 5 * interval

        def run(
            value: float, stop_at: int | None = None, model: Model = model, settle: int = settle
        ) -> list[str]:
            times = arrivals(interval, late, model, until, stop_at)
            return [state for _, state in states(alarm, times, value, model, settle, until)]

        if set(run(0)) != {"OK"}:
            found.append(f"a healthy fleet alarms {model}")
        broken = run(1)
        if "ALARM" not in broken or "OK" in broken[broken.index("ALARM") :]:
            found.append(f"a broken fleet does not stay in alarm {model}")
        stopped = run(0, stop_at=stop)[-1]
        if stopped != ("ALARM" if breaching_when_stopped else "OK"):
            found.append(f"a stopped dispatcher leaves it {stopped} {model}")
    return found


# ---------------------------------------------------------------- the tests


def test_the_gauges_are_known() -> None:
    expected = {
        "MerchantsStale",
        "MerchantsNeedingReauth",
        "StalestMerchantSeconds",
        "StaleLabels",
        "MerchantsAwaitingStoreCode",
    }
    assert expected == TICK_GAUGES


def test_every_alarm_has_a_valid_period_at_every_interval(template: Template) -> None:
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        specs = [props] if "Period" in props else [
            q["MetricStat"] for q in props["Metrics"] if "MetricStat" in q
        ]  # fmt: skip
        for interval in intervals(template):
            evaluation = int(resolve(template, props["EvaluationPeriods"], interval))
            for spec in specs:
                period = int(resolve(template, spec["Period"], interval))
                assert period in (10, 30) or period % 60 == 0, (name, interval, period)
                assert period * evaluation <= DAY, (name, interval)
            assert int(props.get("DatapointsToAlarm", evaluation)) <= evaluation, name


GAUGE_ALARMS = [
    "MerchantNotFreshAlarm",
    "MerchantNeedsReauthAlarm",
    "MerchantsAwaitingStoreCodeAlarm",
]


@pytest.mark.parametrize("name", GAUGE_ALARMS)
def test_gauge_alarms_are_right_at_every_interval(template: Template, name: str) -> None:
    props = gauge_alarms(template)[name]
    late = latest_arrival(template)
    for interval in intervals(template):
        alarm = alarm_at(template, props, interval)
        breaching = alarm.missing == "breaching"
        found = problems(alarm, interval, late, breaching_when_stopped=breaching)
        assert found == [], f"{name} at {interval} s: " + "; ".join(found[:3])


def test_every_gauge_alarm_is_simulated(template: Template) -> None:
    assert set(gauge_alarms(template)) == set(GAUGE_ALARMS)


@pytest.mark.parametrize(("interval", "symptom"), [(900, "healthy"), (1800, "healthy")])
def test_the_simulation_catches_the_old_five_minute_period(interval: int, symptom: str) -> None:
    fresh = Alarm(300, 2, 2, "breaching", "Maximum", 0)
    assert any(symptom in p for p in problems(fresh, interval, 180, breaching_when_stopped=True))
    reauth = Alarm(300, 1, 1, "notBreaching", "Maximum", 0)
    found = problems(reauth, interval, 180, breaching_when_stopped=False)
    assert any("does not stay" in p for p in found)


def test_the_poll_queue_is_late_only_after_an_interval_and_the_spread(template: Template) -> None:
    props = template["Resources"]["PollQueueLateAlarm"]["Properties"]
    for interval in intervals(template):
        threshold = int(resolve(template, props["Threshold"], interval))
        spread = Settings(clover_sync_interval_seconds=interval).dispatch_spread_seconds
        assert threshold >= interval + spread, interval
        assert threshold <= 2 * interval, interval


def test_other_alarms_do_not_depend_on_the_interval(template: Template) -> None:
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm" or name in gauge_alarms(template):
            continue
        ignored = ("Threshold", "AlarmDescription")
        text = str({k: v for k, v in resource["Properties"].items() if k not in ignored})
        assert "SyncIntervalSeconds" not in text, name
