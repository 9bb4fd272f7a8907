"""The poll lease: one poll per merchant at a time, given back however the poll ends.

A poll holds its merchant's lease while it runs, so a second delivery meanwhile (a
webhook, a slow schedule) is acknowledged without work: the running poll covers it. A poll
that fails gives the lease back on its way out, so SQS's retry does real work at once
instead of being acknowledged as "busy" until the lease expires. Giving it back is best
effort: if that write fails too (DynamoDB unreachable), the failure is logged, the poll's
own outcome stands, and the lease expires by itself after :data:`POLL_LEASE_MS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import StateStore

POLL_LEASE_MS = 330_000
"""How long a poll holds its merchant: the poller's Lambda timeout (300 s) and a margin,
so a poll killed by its timeout frees the merchant half a minute later."""


@contextmanager
def merchant_lease(state: StateStore, merchant_id: str, *, now_ms: int) -> Iterator[bool]:
    """Whether the lease was taken (False: another poll holds it); given back on exit."""
    owner = uuid.uuid4().hex
    if not state.acquire_lease(merchant_id, owner, now_ms=now_ms, duration_ms=POLL_LEASE_MS):
        yield False
        return
    try:
        yield True
    finally:
        _release(state, merchant_id, owner)


def _release(state: StateStore, merchant_id: str, owner: str) -> None:
    """Two tries; never raises (an error here would replace the poll's own outcome)."""
    for attempt in (1, 2):
        try:
            state.release_lease(merchant_id, owner)
            return
        except Exception as error:
            failure = f"{type(error).__name__}: {error}"
            if attempt == 2:
                metrics.add_metric(name="LeaseReleaseFailures", unit=MetricUnit.Count, value=1)
                logger.warning(
                    "poll lease not given back; it expires by itself",
                    merchant_id=merchant_id,
                    expires_in_seconds=POLL_LEASE_MS // 1000,
                    error=failure[:300],
                )
