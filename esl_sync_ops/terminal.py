"""What the operator's terminal shows: tables or JSON, and nothing it would interpret.

Names, codes and messages come from Clover, Hipoink or a webhook sender; every cell is
escaped so that a control character or an escape sequence is shown, never acted on.

Every time is shown as its instant in UTC (:func:`utc_text`), whatever time zone it came
in: Postgres hands times over in the database session's (``timezone``, ``PGTZ``), which
is UTC on RDS by default but need not be on a server of one's own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def printable(text: str, limit: int = 300) -> str:
    """Text safe for a terminal: every character that is not printable (control
    characters, escapes, lone surrogates, line breaks) escaped; long text cut short."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    return shown + ("…" if len(text) > limit else "")


def in_utc(moment: datetime) -> datetime:
    """The same instant in UTC (a time without an offset is taken as UTC already)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def utc_text(moment: datetime) -> str:
    """A time as every command prints it: ``2026-11-12 04:00:00Z``, in UTC."""
    return f"{in_utc(moment):%Y-%m-%d %H:%M:%S}Z"


def print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=_json_value, indent=2))
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))


def _json_value(value: object) -> str:
    """What JSON has no type for: a time as its instant in UTC (``2026-11-12
    04:00:00.123456+00:00``, read back by ``datetime.fromisoformat``), else its text."""
    return str(in_utc(value)) if isinstance(value, datetime) else str(value)


def _cell(value: object) -> str:
    """One table cell: what Clover, Hipoink or a webhook sent is escaped for the terminal."""
    if isinstance(value, datetime):
        return utc_text(value)
    return "-" if value is None else printable(str(value), limit=120)
