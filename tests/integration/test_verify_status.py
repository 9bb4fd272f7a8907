"""What each label verify found is recorded: real handlers (the sender runs and records
the verify), moto, Postgres, both simulators on loopback (docs/architecture.md, "Verifying
labels against Hipoink").

A verify's outcome lived only in one log line and three metrics; the sender now records the
last one per merchant (``label_verify_results``): when, requested by whom, the counts, or
the refusal's named reason, cleaned and cut.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.rows import dict_row

from devkit.catalog import numbered_catalog
from devkit.hipoink_sim import HipoinkSimulator
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.messages import LabelVerify
from esl_sync.sync.verify import VerifyOutcome

DRIFTED, REFUSED = "MVSTATUS0001", "MVSTATUS0002"


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


def _recorded(stack: LocalStack, merchant: str) -> dict[str, Any] | None:
    with psycopg.connect(stack.env["DATABASE_URL"], row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM label_verify_results WHERE merchant_id = %s", (merchant,)
        ).fetchone()


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
