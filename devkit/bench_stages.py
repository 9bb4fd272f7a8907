"""Where a first sync's CPU goes, stage by stage (``esl-sync bench --stages``).

The bench's own figures are taken with nothing wrapped. This pass is separate: for its
duration it wraps the poll's main steps, each timed with the CPU clock of the thread that
runs it (``time.thread_time``; a poll runs on one thread, so a step's CPU is that thread's),
and puts them back afterwards. The steps are called a few times a page, so the wrappers
cost nothing worth counting; wrappers around per-item functions would (two clock reads,
≈ 1 µs, more than some of the steps they time), which is why the transform is one stage.
Whatever is not wrapped (the lease, the state, the tokens, the merchant lookup, the commit,
the log lines and metrics) is ``other``: the handler's CPU less the stages.
"""

from __future__ import annotations

import functools
import importlib
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STAGES: tuple[tuple[str, str, str, str], ...] = (
    # (stage, module, class, method)
    ("pages (read and parse)", "esl_sync.clover.walk", "ItemWalk", "__next__"),
    ("transform", "esl_sync.sync.poll", "_Poll", "_transform"),
    ("upsert", "esl_sync.store.postgres", "PostgresProductWriter", "upsert"),
    ("owners' read-back", "esl_sync.store.postgres", "PostgresProductWriter", "label_owners"),
    ("label plan", "esl_sync.sync.labels", "LabelPlan", "add"),
    ("label plan", "esl_sync.sync.labels", "LabelPlan", "resolve"),
    ("label plan", "esl_sync.sync.labels", "LabelPlan", "jobs"),
    ("label queue send", "esl_sync.store.sqs", "SqsLabelQueue", "send"),
)
"""The steps timed: none calls another, so their times add up."""


@contextmanager
def stage_clock() -> Iterator[dict[str, float]]:
    """CPU seconds by stage of whatever runs meanwhile (the steps in :data:`STAGES`)."""
    seconds: defaultdict[str, float] = defaultdict(float)
    lock = threading.Lock()  # a batch's polls run on worker threads at once
    wrapped: list[tuple[type, str, Any]] = []
    try:
        for stage, module_name, class_name, method in STAGES:
            owner = getattr(importlib.import_module(module_name), class_name)
            original = owner.__dict__[method]
            setattr(owner, method, _timed(stage, original, seconds, lock))
            wrapped.append((owner, method, original))
        yield seconds
    finally:
        for owner, method, original in reversed(wrapped):
            setattr(owner, method, original)


def _timed(
    stage: str, step: Callable[..., Any], seconds: dict[str, float], lock: threading.Lock
) -> Callable[..., Any]:
    @functools.wraps(step)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return step(*args, **kwargs)
        finally:
            spent = time.thread_time() - started
            with lock:
                seconds[stage] += spent

    return timed
