"""An operator sees when each store's labels were last verified against Hipoink, and what
was found: real handlers (the sender runs and records the verify), moto, Postgres, both
simulators on loopback (docs/architecture.md, "Verifying labels against Hipoink").

A verify's outcome lived only in one log line and three metrics; ``esl-sync status`` now
shows the last one per merchant (``label_verify_results``): when, requested by whom, the
counts, or the refusal's named reason, cleaned and cut.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devkit.catalog import numbered_catalog
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.messages import LabelVerify
from esl_sync.sync.verify import VerifyOutcome

DRIFTED, REFUSED, NEVER = "MVSTATUS0001", "MVSTATUS0002", "MVSTATUS0003"


def _hipoink(stack: LocalStack) -> HipoinkSimulator:
    assert stack.hipoink is not None
    return stack.hipoink


def _started(stack: LocalStack, *merchants: str, items: int = 6) -> HipoinkSimulator:
    for merchant in merchants:
        stack.add_merchant(merchant, "tok", f"S-{merchant}", items=numbered_catalog(items))
    stack.run_cycle()
    hipoink = _hipoink(stack)
    for merchant in merchants:
        assert len(hipoink.labels(f"S-{merchant}")) == items
    return hipoink


def _verify(stack: LocalStack, merchant: str) -> list[str]:
    """``esl-sync labels verify`` and the sender's run of it: its log lines."""
    mark = len(stack.logs)
    assert "queued" in stack.cli("labels", "verify", merchant)
    drained = stack.drain("LabelQueue", "hipoink_sender")
    assert (drained.records, drained.failures) == (1, 0)  # the batch never fails for it
    return stack.logs[mark:]


def _status(stack: LocalStack) -> dict[str, dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--json"))
    return {r["merchant_id"]: r for r in rows}


def _recorded(stack: LocalStack, merchant: str) -> dict[str, Any] | None:
    with psycopg.connect(stack.env["DATABASE_URL"], row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM label_verify_results WHERE merchant_id = %s", (merchant,)
        ).fetchone()


def test_status_shows_a_drifted_store_a_refused_verify_and_a_merchant_never_verified(
    stack: LocalStack,
) -> None:
    hipoink = _started(stack, DRIFTED, REFUSED, NEVER)
    hipoink.edit(f"S-{DRIFTED}", "SKU0001", pn="Staff typed this")
    _verify(stack, DRIFTED)
    hipoink.fail_next(200, body='{"error_code": 0, "data": "all of them"}')
    _verify(stack, REFUSED)

    rows = _status(stack)

    drifted, refused, never = rows[DRIFTED], rows[REFUSED], rows[NEVER]
    assert drifted["last_verify"] == (
        "drifted (manual): 6 compared, 1 drifted, 1 marked, 0 unknown codes, 0 skipped products"
    )
    assert datetime.fromisoformat(drifted["last_verify_at"]) is not None
    assert refused["last_verify"] == (
        "refused (manual, 1 in a row, never completed): product/query page 1:"
        " answer has no list of products (data)"
    )
    assert refused["last_verify_at"] is not None
    assert (never["last_verify"], never["last_verify_at"]) == ("never", None)
    # The rest of the row is as it was: these two keys come last.
    assert list(drifted)[-2:] == ["last_verify_at", "last_verify"]
    text = stack.cli("status")
    assert "1 whose last label verify was refused" in text
    assert "drifted (manual): 6 compared" in text

    # The next verify of the refused store completes: ok, and the refusals in a row end.
    _verify(stack, REFUSED)
    ok = _status(stack)[REFUSED]
    assert ok["last_verify"] == (
        "ok (manual): 6 compared, 0 drifted, 0 marked, 0 unknown codes, 0 skipped products"
    )
    hipoink.fail_next(200, body="<html>gateway</html>")
    _verify(stack, REFUSED)
    hipoink.fail_next(200, body="<html>gateway</html>")
    _verify(stack, REFUSED)
    again = _status(stack)[REFUSED]
    assert again["last_verify"].startswith(
        f"refused (manual, 2 in a row, last completed {ok['last_verify_at'][:19]}Z):"
        " query: answer is not JSON (HTTP 200)"
    ), again["last_verify"]
    assert "1 whose last label verify was refused" in stack.cli("status")


def test_a_sweeps_verify_is_recorded_as_the_sweeps(stack: LocalStack) -> None:
    hipoink = _started(stack, DRIFTED)
    hipoink.forget(f"S-{DRIFTED}", "SKU0002")
    runtime.label_queue().send(
        [LabelVerify(merchant_id=DRIFTED, store_code=f"S-{DRIFTED}", reason="sweep")]
    )
    drained = stack.drain("LabelQueue", "hipoink_sender")
    assert (drained.records, drained.failures) == (1, 0)

    row = _recorded(stack, DRIFTED)
    assert row is not None
    assert (row["requested_by"], row["store_code"], row["compared"], row["drifted"]) == (
        "sweep",
        f"S-{DRIFTED}",
        6,
        1,
    )
    assert _status(stack)[DRIFTED]["last_verify"].startswith("drifted (sweep): 6 compared")


def test_a_hostile_refusal_reason_is_stored_cleaned_and_cut(stack: LocalStack) -> None:
    """What Hipoink says in an error (NUL, a lone surrogate, near a megabyte) is cut to a
    short named reason; so is any refusal text the sender records."""
    from esl_sync.sync.sender import record_verify

    _started(stack, REFUSED, items=2)
    said = "quota\\u0000 exce\\ud800eded " + "x" * 900_000
    _hipoink(stack).fail_next(200, body=f'{{"error_code": 1, "error_msg": "{said}"}}')
    lines = _verify(stack, REFUSED)
    assert not any("Traceback" in line for line in lines)

    row = _recorded(stack, REFUSED)
    assert row is not None
    assert row["refused"].startswith("query: quota exceeded xxx")
    assert len(row["refused"]) <= 200
    # Any refusal the sender records, whatever made it: NUL, lone surrogates, a megabyte,
    # line breaks and a terminal escape.
    outcome = VerifyOutcome(REFUSED, f"S-{REFUSED}", "sweep", verified=2)
    outcome.refused = "bad\x00\ud800 answer\n\x1b[2J" + "y" * (1 << 20)
    record_verify(outcome, runtime.label_ledger())
    row = _recorded(stack, REFUSED)
    assert row is not None
    assert row["refused"] == ("bad answer [2J" + "y" * 200)[:200]
    assert (row["requested_by"], row["compared"], row["refused_in_a_row"]) == ("sweep", 2, 2)
    shown = _status(stack)[REFUSED]["last_verify"]
    assert shown.endswith("in a row, never completed): bad answer [2J" + "y" * 186)
    # A merchant not (or no longer) registered: nothing recorded, nothing raised.
    record_verify(VerifyOutcome("MNOTKNOWN001", "S-X", "manual"), runtime.label_ledger())
    assert _recorded(stack, "MNOTKNOWN001") is None


def test_a_verify_whose_outcome_cannot_be_recorded_still_marks_its_drift(
    stack: LocalStack,
) -> None:
    """Recording is after the verify and never fails it, nor the label queue's batch: the
    table gone (a sender newer than its schema) is one named error line."""
    hipoink = _started(stack, DRIFTED)
    hipoink.forget(f"S-{DRIFTED}", "SKU0003")
    with psycopg.connect(stack.env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("ALTER TABLE label_verify_results RENAME TO label_verify_results_away")

    lines = _verify(stack, DRIFTED)

    [line] = [json.loads(x) for x in lines if '"label verify not recorded' in x]
    assert (line["level"], line["merchant_id"]) == ("ERROR", DRIFTED)
    drifts = [r["pc"] for r in stack.label_state(DRIFTED) if r["failure_class"] == "drift"]
    assert drifts == ["SKU0003"]
    assert any('"labels verified against Hipoink' in x for x in lines)


def test_a_verify_of_the_store_a_merchant_left_names_that_store(stack: LocalStack) -> None:
    hipoink = _started(stack, DRIFTED)
    assert "queued" in stack.cli("labels", "verify", DRIFTED)
    hipoink.add_store("S-MOVED")
    stack.cli("merchants", "set-store", DRIFTED, "S-MOVED")  # before the sender runs it
    stack.drain("LabelQueue", "hipoink_sender")

    row = _status(stack)[DRIFTED]
    assert row["store_code"] == "S-MOVED"
    assert row["last_verify"] == (
        f"refused (manual, of store S-{DRIFTED}, 1 in a row, never completed):"
        f" store S-{DRIFTED} is no longer the merchant's"
    )


def test_a_verify_whose_answer_cannot_be_decoded_is_recorded_refused(stack: LocalStack) -> None:
    """A ``product/query`` answer claiming ``gzip`` over a body that is not: httpx's
    DecodingError escaped the verify (which refuses by name whatever Hipoink answers), so
    nothing was recorded, the record failed and SQS retried it ahead of its store's label
    jobs. Now it is a refusal like an answer that is not JSON: recorded, the batch fine."""
    _started(stack, REFUSED, items=2)
    _hipoink(stack).fail_next(200, body='{"error_code": 0}', content_encoding="gzip")

    lines = _verify(stack, REFUSED)

    assert not any("Traceback" in line for line in lines)
    row = _recorded(stack, REFUSED)
    assert row is not None
    assert row["refused"] == "query: answer cannot be decoded (gzip, HTTP 200)"
    assert _status(stack)[REFUSED]["last_verify"] == (
        "refused (manual, 1 in a row, never completed):"
        " query: answer cannot be decoded (gzip, HTTP 200)"
    )
