"""What grows with the fleet must stay within AWS's limits for one log event, one trace
document and one message: tried through the real handlers with a fleet of field size.

moto and the local runner enforce none of these limits, so each test measures what the
handler produced against the limit it names (as ``test_poll.py`` does for SQS's)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg

from devkit.emf import metric_sums
from devkit.local_stack import LocalStack
from esl_sync.messages import LabelJob

LOG_EVENT_LIMIT = 262_144
"""Bytes of one CloudWatch Logs event as Lambda sends it (256 KB): a longer line is cut
there, and a JSON line cut is no longer JSON (Logs Insights cannot read its fields)."""

LONG_ID = "M" * 58  # a merchant id may be 64 characters (1–64 of A-Z a-z 0-9 - _)


def _merchant_ids(count: int) -> list[str]:
    return [f"{LONG_ID}{n:06d}" for n in range(count)]


def _register(stack: LocalStack, merchant_ids: list[str], *, store_code: bool = True) -> None:
    """Merchants as the operator's commands leave them, without tokens (no poll runs),
    added a day ago: each is stale to the dispatcher (no success in three intervals)."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO merchants (merchant_id, store_code, created_at)"
            " VALUES (%s, %s, now() - interval '1 day')",
            [(m, f"S-{n}" if store_code else None) for n, m in enumerate(merchant_ids)],
        )


def _longest(stack: LocalStack, since: int) -> int:
    return max(len(line.encode()) for line in stack.logs[since:])


def _lines(stack: LocalStack, since: int, message: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in stack.logs[since:] if f'"{message}"' in line]
    return [line for line in found if line.get("message") == message]


def test_a_fleet_that_needs_attention_is_named_within_one_log_event(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Every merchant stale at once (an outage): the dispatcher's warning named all of them,
    ≈ 300 KB for 4,500 merchants of 64-character ids (for Clover's 13-character ids, 10,000
    stale merchants that also need re-auth are ≈ 320 KB). Past 256 KB Lambda cuts the line,
    so the one line that names who needs attention was unreadable exactly when most needed."""
    stack = make_stack(CLOVER_SYNC_ENABLED="false")  # the health is measured all the same
    merchants = _merchant_ids(4500)
    _register(stack, merchants)
    mark = len(stack.logs)

    stack.dispatch()

    assert _longest(stack, mark) < LOG_EVENT_LIMIT // 4  # well within it, whatever the fleet
    (warning,) = _lines(stack, mark, "merchants need attention")
    assert warning["stale_count"] == 4500
    assert warning["stale"] == sorted(merchants)[: len(warning["stale"])]
    assert len(warning["stale"]) >= 10
    assert metric_sums(stack.logs[mark:])["MerchantsStale"] == 4500


XRAY_SEGMENT_DOCUMENT_LIMIT = 65_536
"""Bytes of one X-Ray segment document (64 kB). The tracer records a handler's answer as
metadata of its ``## lambda_handler`` subsegment (Powertools' ``capture_response``), one
document; the X-Ray SDK sends it to the daemon as one UDP datagram, which cannot be longer,
and a document past it is lost with the subsegments that name it as their parent."""


def test_the_dispatchers_answer_stays_one_trace_document_however_many_are_skipped(
    make_stack: Callable[..., LocalStack],
) -> None:
    """Merchants with a longer own interval (the README's answer to Clover's rate limits)
    are skipped on most ticks, as are merchants awaiting a store code: the answer listed
    each with why, ≈ 46 bytes a merchant of Clover's ids, so 1,500 of them passed X-Ray's
    64 kB and the dispatcher's trace document was lost on every tick."""
    stack = make_stack()
    merchants = [f"MOWN{n:09d}" for n in range(2000)]
    _register(stack, merchants)
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        conn.execute("UPDATE merchants SET poll_interval_seconds = 3600")
    _register(stack, [f"MAWAIT{n:07d}" for n in range(200)], store_code=False)

    answer = stack.invoke("dispatcher", {"reason": "schedule"})

    assert len(json.dumps(answer).encode()) < XRAY_SEGMENT_DOCUMENT_LIMIT // 16
    assert answer["skipped"] + answer["dispatched"] == 2200
    assert 200 < answer["skipped"] < 2200


def test_a_job_whose_every_record_is_refused_is_reported_within_one_log_event(
    stack: LocalStack,
) -> None:
    """A label job of hundreds of refused records (here a job edited by hand and redriven,
    prices ``null``; Hipoink refusing each record of a job does the same) whose codes are
    64 characters of emoji: the ``label job delivered`` line named every refused code, as
    long as the job itself (up to SQS's 256 KiB), and passed CloudWatch Logs' 256 KB."""
    stack.add_merchant("MREFUSED0001", "tok-refused", "S-REFUSED")
    codes = [f"{n:04d}" + "\U0001f600" * 60 for n in range(900)]
    job = LabelJob(
        merchant_id="MREFUSED0001",
        store_code="S-REFUSED",
        upserts=[{"pc": pc, "pp": None} for pc in reversed(codes)],
    ).to_json()
    assert 200_000 < len(job.encode()) < 262_144  # a message the label queue takes
    stack.sqs.send_message(
        QueueUrl=stack.urls["LabelQueue"],
        MessageBody=job,
        MessageGroupId="MREFUSED0001",
        MessageDeduplicationId="refused",
    )
    mark = len(stack.logs)

    stack.drain("LabelQueue", "hipoink_sender")

    assert _longest(stack, mark) < LOG_EVENT_LIMIT // 4
    (delivered,) = _lines(stack, mark, "label job delivered")
    assert delivered["rejected"] == 900
    assert delivered["rejected_codes"] == codes[: len(delivered["rejected_codes"])]
    assert len(delivered["rejected_codes"]) >= 10
