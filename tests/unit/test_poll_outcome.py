"""What one poll reports (esl_sync.sync.poll_outcome): a poll that found nothing to do is
quiet (named in the batch's one line, no "poll finished" line of its own), and one that read
nothing because its merchant cannot be polled counts as skipped (``PollsSkipped``)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from esl_sync.sync.poll_outcome import PollOutcome


def test_a_poll_reports_nothing_it_did_not_do() -> None:
    """What the "poll finished" line shows of a poll that set none of it (a skipped one)."""
    outcome = PollOutcome("M", "schedule")
    assert asdict(outcome) == {
        "merchant_id": "M",
        "reason": "schedule",
        "status": "ok",
        "detail": None,
        "seconds_since_last_success": None,
        "items_fetched": 0,
        "products_changed": 0,
        "invalid_items": 0,
        "label_upserts": 0,
        "label_deletes": 0,
        "clover_requests": 0,
        "full_walk_fallback": False,
        "sweep": None,
        "deletes_confirmed": 0,
        "duration_ms": 0,
    }
    assert (outcome.quiet, outcome.skipped) == (True, False)


def test_reading_clover_without_finding_a_change_is_quiet() -> None:
    outcome = PollOutcome(
        "M", "webhook", items_fetched=3, clover_requests=2, duration_ms=900,
        seconds_since_last_success=60,
    )  # fmt: skip
    assert outcome.quiet


@pytest.mark.parametrize(
    "fact",
    [
        {"status": "failed"},
        {"status": "busy"},
        {"status": "skipped"},
        {"products_changed": 1},
        {"invalid_items": 1},
        {"label_upserts": 1},
        {"label_deletes": 1},
        {"full_walk_fallback": True},
        {"sweep": "complete"},
        {"deletes_confirmed": 1},
    ],
)
def test_a_poll_that_changed_refused_swept_or_failed_anything_is_not_quiet(
    fact: dict[str, object],
) -> None:
    assert not replace(PollOutcome("M", "schedule"), **fact).quiet


@pytest.mark.parametrize(
    ("status", "skipped"),
    [("skipped", True), ("ok", False), ("busy", False), ("needs_reauth", False), ("failed", False)],
)
def test_only_a_poll_that_could_not_poll_counts_as_skipped(status: str, skipped: bool) -> None:
    assert PollOutcome("M", "schedule", status=status).skipped is skipped
