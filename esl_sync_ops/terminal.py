"""What the operator's terminal shows: tables or JSON, and nothing it would interpret.

Names, codes and messages come from Clover, Hipoink or a webhook sender; every cell is
escaped so that a control character or an escape sequence is shown, never acted on.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any


def printable(text: str, limit: int = 300) -> str:
    """Text safe for a terminal: every character that is not printable (control
    characters, escapes, lone surrogates, line breaks) escaped; long text cut short."""
    cut = text[:limit]
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    return shown + ("…" if len(text) > limit else "")


def print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        print("(none)")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(_cell(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_cell(row[c]).ljust(widths[c]) for c in columns))


def _cell(value: object) -> str:
    """One table cell: what Clover, Hipoink or a webhook sent is escaped for the terminal."""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return "-" if value is None else printable(str(value), limit=120)
