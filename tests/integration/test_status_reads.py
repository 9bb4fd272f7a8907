"""``esl-sync status`` as an operator of a fleet reads it: every time it prints is UTC, in
one format, whatever the database session's time zone; and the label ledger is read for
the whole fleet in a fixed number of statements, not three per merchant.

Real Postgres (the session's time zone set by ``PGTZ``, as a self-hosted server or an
operator's environment may set it), moto, both simulators on loopback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from devkit.catalog import numbered_catalog
from devkit.local_stack import LocalStack
from esl_sync import runtime
from esl_sync.records import VerifyResult

M = "MSTATUSTZ001"
STORE = "S-TZ"
FAR_FROM_UTC = "Pacific/Chatham"  # +12:45 (+13:45 in its summer): no whole-hour slip hides
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ?")


def _utc(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _stored(stack: LocalStack, query: str) -> list[datetime]:
    """Instants as Postgres holds them, read on a connection of its own (any time zone:
    an aware datetime is the instant)."""
    with psycopg.connect(stack.env["DATABASE_URL"]) as conn:
        return [row[0] for row in conn.execute(query, (M,)).fetchall()]


def _line_of(text: str, merchant_id: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(merchant_id))


def test_every_time_status_prints_is_utc_in_a_session_far_from_utc(
    make_stack: Callable[..., LocalStack], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGTZ", FAR_FROM_UTC)  # every connection libpq opens from here on
    stack = make_stack()
    assert stack.hipoink is not None
    stack.add_merchant(M, "tok", STORE, items=numbered_catalog(3))
    stack.hipoink.sign = "rotated-on-the-server"  # the store is blocked, its labels fail
    stack.run_cycle()
    runtime.label_ledger().record_verify(VerifyResult(M, STORE, "manual", 3, 0, 0, 0, 0, None))
    with runtime.database().connection().cursor() as cur:  # the CLI's own session
        cur.execute("SHOW timezone")
        assert cur.fetchone() == (FAR_FROM_UTC,)

    [blocked_at] = _stored(stack, "SELECT blocked_at FROM store_blocks WHERE merchant_id = %s")
    [verified_at] = _stored(
        stack, "SELECT verified_at FROM label_verify_results WHERE merchant_id = %s"
    )
    failed = _stored(
        stack, "SELECT failed_at FROM stale_labels WHERE merchant_id = %s ORDER BY pc, action"
    )
    since = _stored(
        stack, "SELECT since FROM stale_labels WHERE merchant_id = %s ORDER BY pc, action"
    )
    assert len(failed) == len(since) == 3
    assert all(failed)
    assert all(since)

    # The table: each time is the stored instant in UTC, and every time printed ends in Z.
    text = stack.cli("status")
    line = _line_of(text, M)
    assert f"since {_utc(blocked_at)}: create_multiple: sign error" in line, line
    assert _utc(verified_at) in line, line
    assert all(t.endswith("Z") for t in TIME.findall(text)), text

    # JSON: the same instants, written in UTC.
    [row] = json.loads(stack.cli("status", "--json"))
    assert row["store_blocked"] == f"since {_utc(blocked_at)}: create_multiple: sign error"
    for key in ("last_verify_at", "last_success", "cursor"):
        if row[key] is not None:
            assert datetime.fromisoformat(row[key]).utcoffset() == timedelta(0), (key, row[key])
    assert datetime.fromisoformat(row["last_verify_at"]) == verified_at

    # status --labels: since and the failure's time, in the table and in JSON.
    labels = stack.cli("status", "--labels", M)
    assert all(t.endswith("Z") for t in TIME.findall(labels)), labels
    first = _line_of(labels, "SKU0000")
    assert _utc(since[0]) in first, first
    assert _utc(failed[0]) in first, first
    rows: list[dict[str, Any]] = json.loads(stack.cli("status", "--labels", M, "--json"))
    for label, (when, failure_at) in zip(rows, zip(since, failed, strict=True), strict=True):
        assert datetime.fromisoformat(label["since"]) == when
        assert datetime.fromisoformat(label["since"]).utcoffset() == timedelta(0)
        assert datetime.fromisoformat(label["failed_at"]) == failure_at
        assert datetime.fromisoformat(label["failed_at"]).utcoffset() == timedelta(0)


def _statements_of_status(stack: LocalStack) -> int:
    """Statements ``esl-sync status`` sends to Postgres (each a round trip): counted by the
    cursor every connection of the process uses (``Database.round_trips``)."""
    before = runtime.database().round_trips
    stack.cli("status")
    stack.cli("status", "--json")
    return (runtime.database().round_trips - before) // 2


@pytest.mark.parametrize("merchants", [1, 30])
def test_status_reads_the_ledger_in_a_fixed_number_of_statements(
    stack: LocalStack, merchants: int
) -> None:
    """Three statements per merchant (stale labels, refused items, conflicts) made a fleet
    of 500 cost 1,500 round trips; now one statement reads them for every merchant, and
    each merchant's numbers are the ones the per-merchant reads give."""
    ids = [f"MCOUNT{n:06d}" for n in range(merchants)]
    troubled = [  # a code claimed twice, an item refused (no price)
        {"name": "Same code", "price": 5, "priceType": "FIXED", "sku": "SKU0000"},
        {"name": "No price", "price": None, "priceType": "FIXED", "sku": "NOPRICE"},
    ]
    for n, merchant_id in enumerate(ids):
        catalog = numbered_catalog(2) + (troubled if n % 2 == 0 else [])
        stack.add_merchant(merchant_id, "tok", f"S-{merchant_id}", items=catalog)
    stack.run_cycle()
    ledger = runtime.label_ledger()
    ledger.invalidate_acknowledgements(ids[-1])  # its labels stale, as after a resync

    statements = _statements_of_status(stack)

    rows = {r["merchant_id"]: r for r in json.loads(stack.cli("status", "--json"))}
    assert sorted(rows) == ids
    for merchant_id, row in rows.items():
        assert (row["stale_labels"], row["refused_items"], row["label_conflicts"]) == (
            len(ledger.stale_label_details(merchant_id)),
            len(ledger.refused_items(merchant_id)),
            len({c.pc for c in ledger.label_conflicts(merchant_id)}),
        ), merchant_id
    assert (rows[ids[0]]["refused_items"], rows[ids[0]]["label_conflicts"]) == (1, 1)
    assert rows[ids[-1]]["stale_labels"] > 0
    # merchants, store blocks, last verifies, the label counts: one each, any fleet size
    assert statements == 4, statements
