"""The one Logger, Metrics and Tracer of every function (Powertools).

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

from aws_lambda_powertools import Logger, Metrics, Tracer
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
# X-Ray traces the AWS calls everywhere; the functions that call Clover or Hipoink patch
# httpx too (``tracer.patch(("httpx",))``), so the others never load it. Patching all it
# knows would also load and patch what no function uses (sqlite3) and trace botocore's
# requests twice (http.client under it); its psycopg patch needs psycopg_pool, absent here.
tracer = Tracer(service=SERVICE, patch_modules=("botocore",))

__all__ = ["NAMESPACE", "SERVICE", "MetricUnit", "logger", "metrics", "single_metric", "tracer"]
