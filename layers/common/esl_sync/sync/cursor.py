"""Cursor math of the poll: where a read starts, and how far a finished read moves the cursor.

The cursor (``high_water_ms``) only ever holds Clover's own times. A complete read proves
that it saw every item whose ``modifiedTime`` lay between where it started and Clover's
clock when it began, less a margin; so that is where the cursor goes, whether or not the
read found anything. Our clock never enters it, so a Clover clock ahead of or behind ours
cannot hide a change. The next read starts one overlap window behind it, which reads again
the items that became visible to listings late (docs/architecture.md, "The cursor").
"""

from __future__ import annotations

from typing import Literal

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


CLOVER_CLOCK_JUMP_MAX_MS = 3_600_000
"""How far Clover's clock may stray from the cursor beyond the time that really passed, an
hour, before the ``Date`` is not believed (a glitching front end, a clock set wrong)."""


def clock_verdict(
    previous: int | None,
    clover_start_ms: int | None,
    elapsed_ms: int | None,
    *,
    our_now_ms: int | None,
) -> Literal["ahead", "behind"] | None:
    """Whether Clover's clock at a read's start can be believed against the cursor:

    * ``"ahead"``: it leapt past the cursor by more than the time that passed since the
      last success (``elapsed_ms``, on our clock) plus :data:`CLOVER_CLOCK_JUMP_MAX_MS`,
      and past our own clock (``our_now_ms``) by more than that hour too. Taken, the
      cursor would sit there for good (it never moves back) and every incremental read
      would miss the merchant's changes until Clover's clock caught up: the cursor stays,
      as when Clover tells no time. Our clock bounds the leap because the last success
      need not have moved the cursor (it told no time, or a time refused, or a first
      read's time far in the past): measured from it alone, a right time after an hour of
      those was refused, and every one after it, for good;
    * ``"behind"``: the stored cursor lies more than that hour ahead of Clover's own clock
      now, so no read of this Clover proved it (a glitch stored before this check, a hand
      edit): it is dropped, and the next read reads everything, as the first one did;
    * ``None``: believed (also when there is no cursor yet, no time, or no elapsed time).

    Our clock only ever judges Clover's; it never becomes the cursor.
    """
    if previous is None or clover_start_ms is None:
        return None
    if clover_start_ms < previous - CLOVER_CLOCK_JUMP_MAX_MS:
        return "behind"
    if (
        elapsed_ms is not None
        and clover_start_ms > previous + elapsed_ms + CLOVER_CLOCK_JUMP_MAX_MS
        and (our_now_ms is None or clover_start_ms > our_now_ms + CLOVER_CLOCK_JUMP_MAX_MS)
    ):
        return "ahead"
    return None


CLOCK_REFUSALS: dict[str, tuple[str, str]] = {
    "missing": (
        "CloverClockMissing",
        "Clover sent no Date header: the cursor stays where it was",
    ),
    "ahead": (
        "CloverClockImplausible",
        "Clover's Date header leapt past the cursor by more than an hour beyond the time that"
        " passed, and past our clock by more than an hour: the cursor stays where it was",
    ),
    "behind": (
        "CloverClockImplausible",
        "the stored cursor is more than an hour ahead of Clover's clock: it is dropped and"
        " the next poll reads every item",
    ),
}
"""Why a read's Clover time was not taken: the metric and the warning that name it. Each is
safe (work repeats), but would repeat unnoticed without them."""


def cursor_after(
    previous: int | None,
    clover_start_ms: int | None,
    elapsed_ms: int | None,
    *,
    our_now_ms: int | None,
) -> tuple[int | None, str | None]:
    """The cursor after a complete read (:func:`next_cursor`, :func:`clock_verdict`), and
    the key of :data:`CLOCK_REFUSALS` when Clover's time was not taken (else None)."""
    if clover_start_ms is None:
        return previous, "missing"
    verdict = clock_verdict(previous, clover_start_ms, elapsed_ms, our_now_ms=our_now_ms)
    if verdict == "ahead":
        return previous, verdict
    if verdict == "behind":
        return None, verdict
    return next_cursor(previous, clover_start_ms), None
