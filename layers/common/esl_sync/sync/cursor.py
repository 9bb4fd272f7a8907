"""Cursor math of the poll: where a read starts, and how far a finished read moves the cursor.

The cursor (``high_water_ms``) only ever holds Clover's own times. A complete read proves
that it saw every item whose ``modifiedTime`` lay between where it started and Clover's
clock when it began, less a margin; so that is where the cursor goes, whether or not the
read found anything. Our clock never enters it, so a Clover clock ahead of or behind ours
cannot hide a change. The next read starts one overlap window behind it, which reads again
the items that became visible to listings late (docs/architecture.md, "The cursor").
"""

from __future__ import annotations

CURSOR_SKEW_MARGIN_MS = 5_000
"""Kept behind Clover's clock at the start: its ``Date`` header has one-second resolution,
and an item stamped just before the read may not be visible to it yet."""


def read_from(high_water_ms: int | None, overlap_ms: int) -> int | None:
    """Where a read starts: everything on the first read (``None``), else the cursor minus
    the overlap window, which re-reads items that became visible late."""
    if high_water_ms is None:
        return None
    return max(0, high_water_ms - overlap_ms)


def next_cursor(previous: int | None, clover_start_ms: int | None) -> int | None:
    """Clover's clock when a complete read began, less the margin; never moving back.

    A read whose start Clover did not tell (no ``Date``) leaves the cursor where it was:
    repeating work is safe, guessing is not. (The cursor used to stop at the newest
    ``modifiedTime`` processed too; then, after a bulk edit, every idle poll re-read the
    whole edit, its overlap window stuck on it, until something newer came.)
    """
    if clover_start_ms is None:
        return previous
    candidate = max(0, clover_start_ms - CURSOR_SKEW_MARGIN_MS)
    return candidate if previous is None else max(previous, candidate)
