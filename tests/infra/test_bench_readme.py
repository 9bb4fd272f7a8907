"""The README's "Performance and cost" names every option ``esl-sync bench`` offers and every
key of the full run's ``summary``, so neither can change without the README following."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from devkit.commands import register

REPO_ROOT = Path(__file__).resolve().parents[2]


def _performance_section() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Performance and cost\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def _bench_options() -> set[str]:
    parser = argparse.ArgumentParser(prog="esl-sync")
    register(parser.add_subparsers())
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bench = subparsers.choices["bench"]
    return {o for a in bench._actions for o in a.option_strings if o.startswith("--")} - {"--help"}


def _summary_keys() -> set[str]:
    """The keys of the dict assigned to ``report.summary`` in ``devkit/bench.py``'s cost
    step (the full run's; ``--cold-start-only`` writes ``<function>_cold_start_ms``)."""
    tree = ast.parse((REPO_ROOT / "devkit" / "bench.py").read_text(encoding="utf-8"))
    keys: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(isinstance(t, ast.Attribute) and t.attr == "summary" for t in node.targets)
        ):
            keys |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
    return keys


def test_the_readme_names_every_bench_option() -> None:
    section = _performance_section()
    options = _bench_options()
    assert "--cpu-only" in options  # the parser was found
    missing = sorted(o for o in options if not re.search(rf"`{o}[ `]", section))
    assert missing == [], missing


def test_the_readme_names_every_key_of_the_summary() -> None:
    section = _performance_section()
    keys = _summary_keys()
    assert "first_sync_cpu_ms_per_1k_items" in keys  # the summary was found
    missing = sorted(k for k in keys if f"`{k}`" not in section)
    assert missing == [], missing


def test_the_readme_fleet_totals_follow_from_its_cost_lines() -> None:
    """The fleets' monthly totals ("So 100 stores ≈ $…") are the fixed cost per stack plus
    each store's total and its X-Ray traces at that fleet's size (bench_cost's sampling),
    as the printed lines give them; the Sizing's "at most $… (half the poller's duration
    line)" is that half."""
    from devkit import bench_cost

    section = " ".join(_performance_section().split())

    def figure(pattern: str) -> float:
        found = re.search(pattern, section)
        assert found is not None, pattern
        return float(found[1])

    per_store = figure(r"total \(without X-Ray\) \$ *([\d.]+)")
    duration = figure(r"Lambda poller \(duration\) \$ *([\d.]+)")
    fixed = figure(r"≈ \$(\d+)\. So \*\*100 stores")
    invocations = bench_cost.polls_per_month(300) / 5  # per store: the template's defaults
    reservoir = bench_cost.XRAY_RESERVOIR_PER_SECOND * 2_592_000
    for stores, stated in re.findall(r"([\d,]*\d) stores ≈ \$([\d,]*\d)", section):
        n = int(stores.replace(",", ""))
        traced = min(n * invocations, reservoir)
        traces = traced + bench_cost.XRAY_TRACED_SHARE * (n * invocations - traced)
        month = fixed + n * per_store + traces * bench_cost.XRAY_USD_PER_TRACE
        assert abs(int(stated.replace(",", "")) - month) <= max(1.0, month * 0.03), (n, month)
    half = figure(r"for at most \$([\d.]+) a store-month \(half the poller's duration")
    assert half == round(duration / 2, 4)


def test_the_readme_fixed_cost_counts_the_templates_alarms() -> None:
    """The README's "N alarms ($X)": N the template's alarms, $X $0.10 a month per metric
    they watch (a metric-math alarm pays for each of its metrics)."""
    from devkit.template import load_template

    section = " ".join(_performance_section().split())
    found = re.search(r"(\d+) alarms \(\$([\d.]+)\)", section)
    assert found is not None
    alarms = [
        r["Properties"]
        for r in load_template()["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    metrics = sum(len(a.get("Metrics", [])) - 1 if "Metrics" in a else 1 for a in alarms)
    assert (int(found[1]), float(found[2])) == (len(alarms), round(metrics * 0.10, 2))
