"""What one poll reports (esl_sync.sync.poll_outcome): a poll that found nothing to do is
quiet (named in the batch's one line, no "poll finished" line of its own), and one that read
nothing because its merchant cannot be polled counts as skipped (``PollsSkipped``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from esl_sync.clover.errors import CloverOutOfTime, CloverRateLimited, CloverServerError
from esl_sync.clover.tokens import TokenRefreshBusy
from esl_sync.records import FenceRefused, TransientConflict
from esl_sync.settings import ConfigurationError
from esl_sync.store.aws_codec import AwsError, service_error
from esl_sync.store.sqs import QueueSendError
from esl_sync.sync.poll_outcome import PollOutcome


def test_a_poll_reports_nothing_it_did_not_do() -> None:
    """What the "poll finished" line shows of a poll that set none of it (a skipped one)."""
    outcome = PollOutcome("M", "schedule")
    assert outcome.facts() == {
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
        "fault": None,
    }
    assert (outcome.quiet, outcome.skipped, outcome.conflicted) == (True, False, False)


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


_THROTTLED_KMS = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
_THROTTLED_DYNAMODB = (
    b'{"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}'
)
_DENIED_KMS = b'{"__type": "AccessDeniedException", "message": "denied"}'


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (CloverServerError("GET /items: HTTP 500", merchant_id="M", status=500), "merchant"),
        (CloverRateLimited("429", merchant_id="M", retry_after_seconds=1, limit=None), "merchant"),
        (CloverOutOfTime("not sent", merchant_id="M"), "merchant"),
        (FenceRefused("a newer poll wrote first"), "merchant"),
        (TokenRefreshBusy("merchant M: the refresh lock stays held"), "merchant"),
        (TransientConflict("Postgres DeadlockDetected: deadlock detected"), "conflict"),
        (service_error("kms", "Decrypt", 400, {}, _THROTTLED_KMS), "conflict"),
        (service_error("dynamodb", "GetItem", 400, {}, _THROTTLED_DYNAMODB), "conflict"),
        (service_error("kms", "Decrypt", 400, {}, _DENIED_KMS), "service"),
        (AwsError("kms", "Decrypt", "AccessDeniedException", 400, "denied", False), "service"),
        (AwsError("dynamodb", "PutItem", "InternalServerError", 500, "boom", True), "service"),
        (QueueSendError("the label queue refused"), "service"),
        (ConfigurationError("invalid setting: DATABASE_URL"), "service"),
        (ConnectionError("connection refused"), "service"),  # Postgres's, a socket's
        (KeyError("a bug"), "service"),
    ],
)
def test_a_failed_poll_says_whose_failure_it_is(error: Exception, fault: str) -> None:
    """The merchant's (Clover, its lease or refresh lock taken), contention a retry resolves
    (a deadlock; DynamoDB or KMS throttling, as the AWS client reads it off the wire), or
    the poller's own parts (AWS refusing, its queue, a setting, a bug): only the last fail
    a batch that failed whole. The
    error itself stays off the line: its class and message are the detail."""
    outcome = PollOutcome("M", "schedule")
    outcome.failed(error)
    assert (outcome.status, outcome.fault, outcome.error) == ("failed", fault, error)
    assert outcome.conflicted is (fault == "conflict")  # counted as TransientConflicts
    assert outcome.detail == f"{type(error).__name__}: {error}"
    assert "error" not in outcome.facts()


@pytest.mark.parametrize(
    ("sweep", "refused"),
    [
        (None, False),  # no sweep
        ("nothing missing", False),
        ("removed 2 of 3 missing", False),
        ("removed 0 of 7 missing, 2 confirmed (deletions allowed)", False),
        ("refused: 4 of 10 missing", True),
    ],
)
def test_only_a_refused_sweep_counts_as_refused(sweep: str | None, refused: bool) -> None:
    """A refused sweep is what keeps the poll's heal from verifying (rows in doubt)."""
    assert PollOutcome("M", "schedule", sweep=sweep).sweep_refused is refused
