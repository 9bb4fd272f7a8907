"""What one poll did, as the batch reports it (:mod:`esl_sync.sync.poll_batch`): its status,
why, and what it counted."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from esl_sync.clover.errors import CloverError
from esl_sync.clover.tokens import TokenRefreshBusy
from esl_sync.records import FenceRefused, TransientConflict
from esl_sync.sync.sweep import REFUSED

MERCHANTS_FAILURES = (CloverError, FenceRefused, TokenRefreshBusy)
"""The failures of a poll that are the merchant's, not the poller's: Clover's answers and
its silence (5xx, 429, timeouts, refused connections, an unusable answer, a token refused
again after its renewal), a request not sent for want of time (``CloverOutOfTime``), a
newer poll of the merchant that took its lease (``FenceRefused``), its refresh lock held by
another poll (``TokenRefreshBusy``). SQS retries them as designed and they never fail the
invocation. Any other failure is the poller's own (its Postgres, DynamoDB but for the
lease's condition, KMS, a secret, the label queue, a bug): a batch that failed whole with
one of those fails the invocation (:func:`esl_sync.sync.poll_batch.poll_batch`;
docs/architecture.md, "A batch that failed whole")."""

CONFLICTS = (TransientConflict,)
"""Contention a retry resolves, in the poller's own stores (a Postgres deadlock between
two polls, a serialization failure, a lock wait timed out; DynamoDB or KMS throttling
after the client's retries): the poll's ``fault`` is ``conflict``, counted as
``TransientConflicts``, retried by SQS, and never fails the invocation: most batches hold
one poll, and a page for what the retry resolves teaches operators to ignore pages. An
outage of the same stores (refused connections or logins, a missing key) is still the
poller's own."""

Fault = Literal["merchant", "conflict", "service"]


@dataclass
class PollOutcome:
    """What one poll did: the batch reports it (:mod:`esl_sync.sync.poll_batch`)."""

    merchant_id: str
    reason: str
    status: str = "ok"  # ok | skipped | busy | needs_reauth | failed
    detail: str | None = None
    seconds_since_last_success: int | None = None
    items_fetched: int = 0
    products_changed: int = 0
    invalid_items: int = 0
    label_upserts: int = 0
    label_deletes: int = 0
    clover_requests: int = 0
    full_walk_fallback: bool = False
    sweep: str | None = None
    deletes_confirmed: int = 0
    duration_ms: int = 0
    fault: Fault | None = None  # a failed poll's: the merchant's, contention, the poller's own
    error: Exception | None = field(default=None, repr=False, compare=False)  # not logged

    def failed(self, error: Exception) -> None:
        """The poll failed with ``error``: whose failure it is (:data:`MERCHANTS_FAILURES`)."""
        self.status, self.detail = "failed", f"{type(error).__name__}: {error}"
        self.fault = (
            "merchant"
            if isinstance(error, MERCHANTS_FAILURES)
            else "conflict"
            if isinstance(error, CONFLICTS)
            else "service"
        )
        self.error = error

    def facts(self) -> dict[str, Any]:
        """What its ``poll finished`` line says: every field but the error itself (its
        class and message are the ``detail``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "error"}

    @property
    def quiet(self) -> bool:
        """A poll that found nothing to do: no change, no refusal, no sweep, no failure.
        Its facts are the merchant's fresh state (``esl-sync status``) and the metrics; it
        is named in the batch's one line instead of a line of its own."""
        return (
            self.status == "ok"
            and not self.products_changed
            and not self.invalid_items
            and not self.label_upserts
            and not self.label_deletes
            and not self.full_walk_fallback
            and self.sweep is None
            and not self.deletes_confirmed
        )

    @property
    def sweep_refused(self) -> bool:
        """Its sweep removed nothing: too many items missing from the listing
        (``SweepRefused``). Which of the merchant's rows Clover still holds is then in doubt
        (a partial listing, a mass deletion, rows a database restore brought back), so the
        poll's heal treats it as no sweep: no verify, whose heal would put the labels of
        such rows back on the shelf, until a sweep settles them or the operator allows the
        deletions (``esl-sync sweep allow-deletions``)."""
        return self.sweep is not None and self.sweep.startswith(REFUSED)

    @property
    def skipped(self) -> bool:
        """A poll that read nothing because the merchant cannot be polled (unknown,
        disabled, without a store code or a Clover token, or needing re-authorization):
        counted as ``PollsSkipped``, so that a merchant whose every poll is skipped is
        seen."""
        return self.status == "skipped"

    @property
    def conflicted(self) -> bool:
        """A poll that failed for contention (:data:`CONFLICTS`): counted as
        ``TransientConflicts``, so that a storm of them is seen though none pages."""
        return self.fault == "conflict"
