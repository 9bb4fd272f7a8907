"""The poll lease: one poll per merchant at a time, given back however the poll ends.

A poll holds its merchant's lease while it runs, so a second delivery meanwhile (a
webhook, a slow schedule) is acknowledged without work: the running poll covers it. Taking
the lease reads the merchant's state and sealed tokens in the same write, and the poll's
last write (its state) gives the lease back too: two DynamoDB calls for a poll. Taking it
also yields its fencing token (:class:`~esl_sync.records.Fence`), which every Postgres write
of the poll carries: one a newer poll of the merchant wrote past is refused. A poll
that ends without that write (it failed before it, it was skipped, its write was stale)
gives the lease back on its way out, so SQS's retry does real work at once instead of
being acknowledged as "busy" until the lease expires. Giving it back is best effort: if
that write fails too (DynamoDB unreachable), the failure is logged, the poll's own outcome
stands, and the lease expires by itself after :data:`POLL_LEASE_MS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from esl_sync.credentials import SealedTokens
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import StateStore
from esl_sync.records import Fence, MerchantState
from esl_sync.settings import POLL_LEASE_MS as POLL_LEASE_MS


@dataclass
class Lease:
    """A merchant's poll lease, held: the state, the sealed tokens and the fencing token
    read with it (the fence every Postgres write of the poll carries)."""

    merchant_id: str
    owner: str
    state: MerchantState
    sealed: SealedTokens | None
    fence: Fence | None = None
    released: bool = False

    def save_and_release(self, store: StateStore) -> None:
        """Write the state and give the lease back in one write. Raises StaleStateError
        (nothing written) when the state changed or the lease was lost meanwhile; the lease
        is then given back on the way out, if it is still ours."""
        store.save(self.state, release_lease=self.owner)
        self.released = True


@contextmanager
def merchant_lease(store: StateStore, merchant_id: str, *, now_ms: int) -> Iterator[Lease | None]:
    """The lease (None: another poll holds it); given back on exit unless the state write
    gave it back already."""
    owner = uuid.uuid4().hex
    leased = store.take_lease(merchant_id, owner, now_ms=now_ms, duration_ms=POLL_LEASE_MS)
    if leased is None:
        yield None
        return
    lease = Lease(merchant_id, owner, leased.state, leased.sealed, leased.fence)
    try:
        yield lease
    finally:
        if not lease.released:
            _release(store, merchant_id, owner)


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
