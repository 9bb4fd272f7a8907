"""Cursor math: where a read starts and where a finished read leaves the cursor."""

from __future__ import annotations

import pytest

from esl_sync.sync.cursor import next_cursor, read_from

CLOVER_NOW = 1_800_000_000_000


def test_the_first_read_reads_everything() -> None:
    assert read_from(None, 120_000) is None


def test_later_reads_start_one_overlap_window_behind_the_cursor() -> None:
    assert read_from(CLOVER_NOW, 120_000) == CLOVER_NOW - 120_000
    assert read_from(CLOVER_NOW, 0) == CLOVER_NOW
    assert read_from(50_000, 120_000) == 0


def test_the_cursor_is_the_newest_item_processed_when_it_is_older_than_clovers_clock() -> None:
    newest = CLOVER_NOW - 60_000
    assert next_cursor(None, newest, CLOVER_NOW) == newest


def test_the_cursor_stays_behind_clovers_clock_at_the_start() -> None:
    """An item stamped in the last five seconds before the read may not be visible to it
    yet (Clover's ``Date`` has one-second resolution)."""
    assert next_cursor(None, CLOVER_NOW + 1, CLOVER_NOW) == CLOVER_NOW - 5_000
    assert next_cursor(None, CLOVER_NOW - 1, CLOVER_NOW) == CLOVER_NOW - 5_000
    assert next_cursor(None, CLOVER_NOW - 5_000, CLOVER_NOW) == CLOVER_NOW - 5_000


@pytest.mark.parametrize(("max_modified", "clover_start"), [(None, CLOVER_NOW), (CLOVER_NOW, None)])
def test_a_read_without_items_or_without_clovers_clock_keeps_the_cursor(
    max_modified: int | None, clover_start: int | None
) -> None:
    assert next_cursor(CLOVER_NOW - 9, max_modified, clover_start) == CLOVER_NOW - 9
    assert next_cursor(None, max_modified, clover_start) is None


def test_the_cursor_never_moves_back() -> None:
    """Re-reading the overlap window finds only items older than the cursor."""
    previous = CLOVER_NOW - 10_000
    assert next_cursor(previous, previous - 30_000, CLOVER_NOW) == previous
    assert next_cursor(previous, CLOVER_NOW, previous) == previous


def test_the_cursor_moves_forward_once_it_has_a_value() -> None:
    """Else every poll would re-read everything changed since the first one."""
    previous = CLOVER_NOW - 600_000
    assert next_cursor(previous, CLOVER_NOW - 60_000, CLOVER_NOW) == CLOVER_NOW - 60_000
    assert next_cursor(previous, CLOVER_NOW, CLOVER_NOW) == CLOVER_NOW - 5_000
