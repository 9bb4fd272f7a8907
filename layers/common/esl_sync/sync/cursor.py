"""Cursor math of the poll: where a read starts, and how far a finished read moves the cursor.

The cursor (``high_water_ms``) only ever holds Clover's own times: the largest
``modifiedTime`` processed, capped by Clover's clock when the read began. Our clock never
enters it, so a Clover clock ahead of or behind ours cannot hide a change.
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


def next_cursor(
    previous: int | None, max_modified_ms: int | None, clover_start_ms: int | None
) -> int | None:
    """``min(max modifiedTime processed, Clover's clock at start − margin)``, never moving back.

    A read that processed nothing, or whose start time Clover did not tell (no ``Date``),
    leaves the cursor where it was: repeating work is safe, guessing is not.
    """
    if max_modified_ms is None or clover_start_ms is None:
        return previous
    candidate = min(max_modified_ms, clover_start_ms - CURSOR_SKEW_MARGIN_MS)
    return candidate if previous is None else max(previous, candidate)
