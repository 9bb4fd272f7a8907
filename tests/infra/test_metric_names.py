"""Every metric of ours that the dashboard draws or an alarm watches is one the code emits
and the README names.

CloudWatch takes any metric name: a dashboard line or an alarm on a name the code does not
emit (a typo, a metric renamed since) draws nothing and, for an alarm treating missing data
as fine, never fires; that is a monitor that silently stopped. The dashboard's body is also
checked to be JSON CloudWatch can read (``PutDashboard`` refuses anything else, failing the
deploy).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

import pytest

from devkit.template import REPO_ROOT

pytestmark = pytest.mark.infra

NAMESPACE = "EslSync"
DEPLOYED = (REPO_ROOT / "layers" / "common" / "esl_sync", REPO_ROOT / "functions")


def _string_literals() -> set[str]:
    """Every string constant in the deployed code (a metric name is one, wherever it is
    written: a call's argument, a table of refusals, a tuple of gauges)."""
    found: set[str] = set()
    for root in DEPLOYED:
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            found.update(
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str)
            )
    return found


def _named_in_calls() -> set[str]:
    """The metric names written out in ``add_metric(name=...)`` and ``single_metric(name=...)``
    calls of the deployed code (names from tables are checked where their tables are)."""
    found: set[str] = set()
    for root in DEPLOYED:
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.Call):
                    continue
                called = node.func.attr if isinstance(node.func, ast.Attribute) else None
                if called in {"add_metric", "single_metric"} or (
                    isinstance(node.func, ast.Name) and node.func.id == "single_metric"
                ):
                    found.update(
                        k.value.value
                        for k in node.keywords
                        if k.arg == "name"
                        and isinstance(k.value, ast.Constant)
                        and isinstance(k.value.value, str)
                    )
    return found


def _dashboard(template: dict[str, Any]) -> dict[str, Any]:
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    # ${Name} and ${Resource.Attribute} become plain text, as CloudFormation's Sub makes them
    body = re.sub(r"\$\{[A-Za-z0-9:.]+\}", "x", body)
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def _dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    namespace = None
    for widget in dashboard["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            values = [v for v in line if not isinstance(v, dict)]
            if not values:  # a metric math expression: its metrics are lines of their own
                continue
            # CloudWatch's shorthand: "." repeats the line before's value in that place
            namespace = namespace if values[0] == "." else values[0]
            if namespace == NAMESPACE:
                names.add(values[1])
    return names


def _alarm_metrics(template: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        properties = resource["Properties"]
        if properties.get("Namespace") == NAMESPACE:
            names.add(properties["MetricName"])
        for query in properties.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == NAMESPACE:
                names.add(metric["MetricName"])
    return names


def test_the_dashboard_and_alarms_watch_only_metrics_the_code_emits_and_the_readme_names(
    template: dict[str, Any],
) -> None:
    drawn, watched = _dashboard_metrics(_dashboard(template)), _alarm_metrics(template)
    assert len(drawn) > 10  # the parsing found them
    assert len(watched) > 5
    emitted = _string_literals()
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted((drawn | watched) - emitted) == []
    assert sorted(name for name in drawn | watched if f"`{name}`" not in readme) == []


def test_the_check_finds_a_metric_nobody_emits(template: dict[str, Any]) -> None:
    dashboard = _dashboard(template)
    dashboard["widgets"].append(
        {"properties": {"metrics": [[NAMESPACE, "LabelsUpsertd", "service", "esl-sync"]]}}
    )
    assert "LabelsUpsertd" in _dashboard_metrics(dashboard) - _string_literals()


def test_every_metric_written_out_in_the_code_is_named_in_the_readme() -> None:
    """An operator reads the README's list to know what to graph and alarm on."""
    named = _named_in_calls()
    assert {"LabelsUpserted", "PollsDispatched", "LabelJobsNotStarted"} <= named
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert sorted(name for name in named if f"`{name}`" not in readme) == []


def test_every_count_the_poller_sums_per_batch_is_named_in_the_readme() -> None:
    """The poller's batch counts come from a table (``poll_batch._COUNTS``), not from
    ``add_metric`` calls written out, so the check above does not see them."""
    from esl_sync.sync import poll_batch

    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    counts = set(poll_batch._COUNTS)
    assert {"ItemsFetched", "PollsSkipped"} <= counts
    assert sorted(name for name in counts if f"`{name}`" not in readme) == []
