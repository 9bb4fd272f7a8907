"""The one Logger and Metrics of every function (Powertools); the X-Ray tracer of the
functions that use one is :mod:`esl_sync.tracing`.

Service name and metrics namespace come from ``POWERTOOLS_SERVICE_NAME`` and
``POWERTOOLS_METRICS_NAMESPACE``; the defaults keep the local stack and the CLI working.
The poller adds metrics from several threads at once (its polls overlap): Powertools'
``add_metric`` reads the metric set, then writes it back, so two threads could lose a value;
here it runs under a lock. Logging is thread-safe as it is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "esl-sync")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "EslSync")

logger = Logger(service=SERVICE)

LOGGED_NAMES = 50
"""Merchants (or codes) one log line names of a list that grows with the fleet or a
catalog; the line carries the total count beside them. Lambda sends each line as one
CloudWatch Logs event of at most 256 KB and cuts a longer one, which is then no JSON
Logs Insights can read: 10,000 stale merchants named in full were ≈ 160 KB for Clover's
13-character ids and ≈ 670 KB for 64-character ones. Fifty ids of 64 characters are
≈ 3.4 KB. The rest are in ``esl-sync status``."""


def first_named(names: Iterable[str], limit: int = LOGGED_NAMES) -> list[str]:
    """The first ``limit`` of ``names``, sorted (the same ones on every line, whatever the
    order they were found in)."""
    return sorted(names)[:limit]


class _Metrics(Metrics):
    """Powertools' Metrics, safe to add to from several threads."""

    _lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)


metrics: Metrics = _Metrics(service=SERVICE, namespace=NAMESPACE)

__all__ = [
    "LOGGED_NAMES",
    "NAMESPACE",
    "SERVICE",
    "MetricUnit",
    "first_named",
    "logger",
    "metrics",
    "single_metric",
]
