"""What one poll did, as the batch reports it (:mod:`esl_sync.sync.poll_batch`): its status,
why, and what it counted."""

from __future__ import annotations

from dataclasses import dataclass


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
    def skipped(self) -> bool:
        """A poll that read nothing because the merchant cannot be polled (unknown,
        disabled, without a store code or a Clover token, or needing re-authorization):
        counted as ``PollsSkipped``, so that a merchant whose every poll is skipped is
        seen."""
        return self.status == "skipped"
