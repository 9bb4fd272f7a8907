"""Reading Powertools' CloudWatch Embedded Metric Format lines, as CloudWatch would."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable


def metric_values(
    lines: Iterable[str], dimensions: dict[str, str] | None = None
) -> dict[str, list[float]]:
    """Every value emitted per metric name, in order; ``dimensions`` keeps only the lines
    that carry exactly those dimension values (e.g. ``{"Limit": "…"}``)."""
    values: defaultdict[str, list[float]] = defaultdict(list)
    for line in lines:
        if '"_aws"' not in line:
            continue
        blob = json.loads(line)
        if dimensions and any(blob.get(k) != v for k, v in dimensions.items()):
            continue
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for definition in directive["Metrics"]:
                raw = blob[definition["Name"]]
                values[definition["Name"]] += raw if isinstance(raw, list) else [raw]
    return dict(values)


def metric_sums(lines: Iterable[str], dimensions: dict[str, str] | None = None) -> dict[str, float]:
    """The Sum statistic of every metric over the lines."""
    return {name: sum(v) for name, v in metric_values(lines, dimensions).items()}


def metric_units(lines: Iterable[str]) -> dict[str, str]:
    """The unit each metric is emitted with (``Count``, ``Seconds``, …)."""
    units: dict[str, str] = {}
    for line in lines:
        if '"_aws"' in line:
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                units.update({d["Name"]: d.get("Unit", "None") for d in directive["Metrics"]})
    return units
