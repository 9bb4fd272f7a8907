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
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "esl-sync")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "EslSync")

logger = Logger(service=SERVICE)


class _Metrics(Metrics):
    """Powertools' Metrics, safe to add to from several threads."""

    _lock = threading.Lock()

    def add_metric(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            super().add_metric(*args, **kwargs)


metrics: Metrics = _Metrics(service=SERVICE, namespace=NAMESPACE)

__all__ = ["NAMESPACE", "SERVICE", "MetricUnit", "logger", "metrics", "single_metric"]
