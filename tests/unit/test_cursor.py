"""Cursor math: where a read starts and where a finished read leaves the cursor."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from esl_sync.sync.cursor import (
    CLOCK_REFUSALS,
    CLOVER_CLOCK_JUMP_MAX_MS,
    CURSOR_SKEW_MARGIN_MS,
    clock_verdict,
    cursor_after,
    next_cursor,
    read_from,
)

CLOVER_NOW = 1_800_000_000_000
OVERLAP_MS = 120_000


def test_the_first_read_reads_everything() -> None:
    assert read_from(None, OVERLAP_MS) is None


def test_later_reads_start_one_overlap_window_behind_the_cursor() -> None:
    assert read_from(CLOVER_NOW, OVERLAP_MS) == CLOVER_NOW - OVERLAP_MS
    assert read_from(CLOVER_NOW, 0) == CLOVER_NOW
    assert read_from(50_000, OVERLAP_MS) == 0


def test_a_complete_read_moves_the_cursor_to_clovers_clock_at_its_start_less_the_margin() -> None:
    """Whatever it found: after a bulk edit, the next idle read starts past the edit."""
    assert next_cursor(None, CLOVER_NOW) == CLOVER_NOW - CURSOR_SKEW_MARGIN_MS
    assert next_cursor(CLOVER_NOW - 3_600_000, CLOVER_NOW) == CLOVER_NOW - CURSOR_SKEW_MARGIN_MS
    assert next_cursor(None, 1_000) == 0


def test_the_margin_is_five_seconds_behind_clovers_clock() -> None:
    """An item stamped in the last five seconds before the read may not be visible to it
    yet (Clover's ``Date`` has one-second resolution)."""
    assert next_cursor(None, CLOVER_NOW) == CLOVER_NOW - 5_000
    assert next_cursor(None, 5_000) == 0
    assert next_cursor(None, 5_001) == 1


def test_the_cursor_moves_forward_once_it_has_a_value() -> None:
    """Else every poll would re-read everything changed since the first one."""
    previous = CLOVER_NOW - 600_000
    assert next_cursor(previous, CLOVER_NOW) == CLOVER_NOW - 5_000
    assert next_cursor(previous, CLOVER_NOW + 60_000) == CLOVER_NOW + 55_000


def test_a_read_without_clovers_clock_keeps_the_cursor() -> None:
    assert next_cursor(CLOVER_NOW - 9, None) == CLOVER_NOW - 9
    assert next_cursor(None, None) is None


def test_the_cursor_never_moves_back() -> None:
    """A Clover clock that jumps back (another server answering) moves nothing."""
    previous = CLOVER_NOW - 10_000
    assert next_cursor(previous, previous) == previous
    assert next_cursor(previous, previous + CURSOR_SKEW_MARGIN_MS + 1) == previous + 1


@given(
    gaps=st.lists(st.integers(1_000, 900_000), min_size=1, max_size=12),
    dated=st.lists(st.booleans(), min_size=12, max_size=12),
    stamp=st.integers(0, 6_000_000),
    lag=st.integers(0, OVERLAP_MS + CURSOR_SKEW_MARGIN_MS),
)
def test_an_item_visible_up_to_the_overlap_late_is_read_by_the_first_poll_that_sees_it(
    gaps: list[int], dated: list[bool], stamp: int, lag: int
) -> None:
    """Polls at Clover times S1 < S2 < …, each reading every visible item stamped at or
    after ``read_from(cursor)``: an item stamped ``stamp`` that lists only ``lag`` ms
    later (at most the overlap and the margin) is read by the first poll after that,
    whatever the polls before it found and whether they knew Clover's clock."""
    start, cursor, seen = CLOVER_NOW, None, False
    for gap, has_date in zip(gaps, dated, strict=False):
        start += gap
        since = read_from(cursor, OVERLAP_MS)
        visible = CLOVER_NOW + stamp + lag <= start
        stamped_within = since is None or CLOVER_NOW + stamp >= since
        if visible and not seen:
            assert stamped_within, (cursor, start)
            seen = True
        cursor = next_cursor(cursor, start if has_date else None)


HOUR = 3_600_000


def test_clovers_clock_is_believed_within_the_time_that_passed_plus_an_hour() -> None:
    assert CLOVER_CLOCK_JUMP_MAX_MS == HOUR
    cursor = CLOVER_NOW

    def verdict(told: int | None, elapsed: int | None) -> str | None:
        """With our clock where the cursor plus the time that passed puts it."""
        return clock_verdict(cursor, told, elapsed, our_now_ms=cursor + (elapsed or 0))

    assert clock_verdict(None, CLOVER_NOW + 100 * HOUR, 0, our_now_ms=CLOVER_NOW) is None
    assert verdict(None, 0) is None  # no time told
    assert verdict(cursor + HOUR, 0) is None
    assert verdict(cursor + HOUR + 1, 0) == "ahead"
    assert verdict(cursor + 3 * HOUR, 2 * HOUR) is None  # two hours did pass
    assert verdict(cursor + 3 * HOUR + 1, 2 * HOUR) == "ahead"
    assert verdict(cursor + 1000 * HOUR, None) is None  # no success to measure from
    assert verdict(cursor - HOUR, 0) is None  # a slow clock: the cursor stays
    assert verdict(cursor - HOUR - 1, 0) == "behind"


def test_a_cursor_left_behind_our_clock_takes_a_time_within_our_clock_plus_an_hour() -> None:
    """The last success need not have moved the cursor (no Date, a refused one, a first
    read told 1970): a time past it by hours is believed when it is no later than our own
    clock plus the hour, and refused past that; measured from the last success alone, the
    cursor stayed behind for good."""
    cursor, ours = CLOVER_NOW - 3 * HOUR, CLOVER_NOW
    assert clock_verdict(cursor, ours, 60_000, our_now_ms=ours) is None
    assert clock_verdict(cursor, ours + HOUR, 60_000, our_now_ms=ours) is None
    assert clock_verdict(cursor, ours + HOUR + 1, 60_000, our_now_ms=ours) == "ahead"
    assert clock_verdict(0, ours, 60_000, our_now_ms=ours) is None
    assert cursor_after(cursor, ours, 60_000, our_now_ms=ours) == (ours - 5_000, None)


def test_a_leap_past_the_time_that_passed_is_refused_whichever_clock_is_behind() -> None:
    """Both bounds must be passed for "ahead": the time that passed since the last success
    plus the hour, and our clock plus the hour. With our clock behind the cursor (or no
    reading of it), the first bound alone decides, exactly at its edge."""
    cursor, elapsed = CLOVER_NOW, 2 * HOUR
    for ours in (cursor - 10 * HOUR, None):
        assert clock_verdict(cursor, cursor + 3 * HOUR, elapsed, our_now_ms=ours) is None
        assert clock_verdict(cursor, cursor + 3 * HOUR + 1, elapsed, our_now_ms=ours) == "ahead"
        assert clock_verdict(cursor, cursor + HOUR + 1, 0, our_now_ms=ours) == "ahead"


@given(
    cursor=st.integers(0, 2**53),
    told=st.integers(0, 2**53),
    elapsed=st.none() | st.integers(0, 2**40),
    ours=st.integers(0, 2**53),
)
def test_a_believed_time_never_moves_the_cursor_more_than_an_hour_past_what_passed(
    cursor: int, told: int, elapsed: int | None, ours: int
) -> None:
    verdict = clock_verdict(cursor, told, elapsed, our_now_ms=ours)
    if verdict is None:
        assert told >= cursor - HOUR
        if elapsed is not None:
            ceiling = max(cursor + elapsed, ours) + HOUR
            assert next_cursor(cursor, told) <= ceiling  # type: ignore[operator]
    else:
        assert (verdict == "ahead") == (told > cursor)


def test_after_a_read_the_cursor_and_why_clovers_time_was_not_taken() -> None:
    cursor = CLOVER_NOW

    def after(told: int | None, elapsed: int | None) -> tuple[int | None, str | None]:
        return cursor_after(cursor, told, elapsed, our_now_ms=cursor)

    assert after(None, 0) == (cursor, "missing")
    assert cursor_after(None, None, None, our_now_ms=cursor) == (None, "missing")
    assert after(cursor + HOUR + 1, 0) == (cursor, "ahead")
    assert after(cursor - HOUR - 1, 0) == (None, "behind")
    assert after(cursor + 60_000, 0) == (cursor + 55_000, None)
    assert after(cursor - 60_000, 0) == (cursor, None)  # believed: never back
    assert cursor_after(None, CLOVER_NOW, None, our_now_ms=None) == (CLOVER_NOW - 5_000, None)
    assert {key: metric for key, (metric, _) in CLOCK_REFUSALS.items()} == {
        "missing": "CloverClockMissing",
        "ahead": "CloverClockImplausible",
        "behind": "CloverClockImplausible",
    }
