"""When a deletion sweep runs, and which products it may remove.

Clover's list of changes does not reliably show deletions, so now and then a sweep lists
every id and compares. A listing that misses items would make them look deleted, so each
suspect is confirmed by the caller (404) and a sweep that would remove too much removes
nothing at all, unless the operator allowed this merchant's next sweep to go past that
(``esl-sync sweep allow-deletions``: :func:`deletions_allowed`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from esl_sync.clover.errors import CloverBadResponse, CloverRequestRejected, CloverServerError
from esl_sync.clover.item_types import is_deleted
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.records import MerchantState
from esl_sync.settings import Settings

ProductKey = tuple[str, str]

ALLOW_DELETIONS = "allow deletions "
"""What ``esl-sync sweep allow-deletions`` writes as ``sweep_request_done`` (followed by the
time it ran): another value than any ``sweep_request`` (a webhook's is a random hex token),
so a sweep is asked for (as ``restore catch-up`` asks), and that sweep may remove more than
``CLOVER_MAX_DELETE_FRACTION``. The sweep that confirmed all its suspects records the
request it served as done (:func:`record_sweep`), which uses the permission up: the sweep
after it is judged by the fraction again."""
MAX_CONFIRMATIONS_PER_POLL = 500
"""Suspects a sweep confirms per poll, whatever asked for it (one Clover read each). 500 at
the token's pace (16 requests a second: :mod:`esl_sync.clover.pacing`) take about 31 s; with
the batch's other polls beside it (``PollerBatchSize`` 5, Clover's 50 a second for the whole
app: 2,500 reads in about 50 s) and a 30,000-item listing (30 pages), that stays well within
the poller's 300 s (template.yaml). Unbounded, a store missing 15 % of 30,000 items read
4,500 (about 280 s of one token): the poll ran out of time (``CloverOutOfTime``) at every
try, nothing was removed and the merchant's every poll failed. The rest wait for the next
poll, which sweeps on after the last id confirmed (:func:`record_sweep`)."""
UNDER_WAY = frozenset({"sweep_after", "sweep_for"})
"""The state attributes of a sweep longer than a poll (:func:`record_sweep`). Either one
unreadable (edited by hand) leaves the sweep's place or its request unknown: a sweep is
due and starts over from the first id (it repeats reads, never skips a suspect)."""
LEGACY_CONTINUES = " continues after "
"""How code before ``sweep_after`` marked a sweep under way: ``sweep_request_done`` was
``<what it was> continues after <id>``. Such a state still asks for a sweep (it differs
from the request), which starts over from the first id (the id is not read: a sweep once
more at a deploy costs reads, never skips a suspect) and records the request done at its
end; a permission in front of the marker still counts (:func:`deletions_allowed`)."""


def sweep_due(state: MerchantState, settings: Settings, now: datetime) -> bool:
    """Every ``CLOVER_CLEANUP_EVERY_N_POLLS``-th poll, once ``CLOVER_CLEANUP_INTERVAL_HOURS``
    passed since the last sweep, or when a sweep was asked for (a webhook reporting more
    deletions than the state may hold for confirmation, ``esl-sync restore catch-up``).

    A first read (no readable cursor) lists the whole catalog anyway, so a sweep there
    costs no Clover listing more: only the comparison with the active rows (one statement)
    and a read of each suspect. It sweeps when asked to, and when the state has a history
    (a poll succeeded before: ``poll_count`` or ``last_success_at``): its cursor was lost
    (edited by hand, forgotten by ``resync``, dropped as ahead of Clover's clock) while
    Postgres holds the merchant's rows, and an item deleted meanwhile would otherwise keep
    its row and its label until the next scheduled sweep, hours on. A new merchant's first
    read does not: it has nothing to compare yet, and its first sync stays as cheap as
    ever. Every first read starts the sweep clock (``last_sweep_ms``).

    Also whenever the deletions a webhook noted cannot be read (``pending_deletes`` edited
    by hand: the state store's save then removes it), first read or not: only a sweep
    finds what it held; and while a sweep is under way (:func:`record_sweep`)."""
    if "pending_deletes" in state.unreadable or state.sweep_requested:
        return True
    if state.sweep_after is not None or UNDER_WAY.intersection(state.unreadable):
        return True  # a sweep under way goes on (or starts over: UNDER_WAY)
    if state.high_water_ms is None:
        return state.poll_count > 0 or state.last_success_at is not None
    if (state.poll_count + 1) % settings.clover_cleanup_every_n_polls == 0:
        return True
    if state.last_sweep_ms is None:
        return True
    hours = (now.timestamp() * 1000 - state.last_sweep_ms) / 3_600_000
    return hours >= settings.clover_cleanup_interval_hours


def deletions_allowed(state: MerchantState) -> datetime | None:
    """When the operator allowed the merchant's next sweep past the fraction, while no
    sweep has used that permission up; otherwise None. Only the text ``esl-sync sweep
    allow-deletions`` writes is a permission: the prefix and a time with its offset. Any
    other (edited by hand: no time, garbage, a NUL) is none: it still asks for a sweep
    (it differs from the request), judged by the fraction."""
    done = state.sweep_request_done
    if not (state.sweep_requested and done is not None and done.startswith(ALLOW_DELETIONS)):
        return None
    text = done.removeprefix(ALLOW_DELETIONS).partition(LEGACY_CONTINUES)[0]
    try:
        moment = datetime.fromisoformat(text) if text.isascii() else None
    except ValueError:
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


def continued_after(state: MerchantState) -> str | None:
    """The last suspect id an unfinished sweep confirmed: the next poll's sweep goes on
    after it; None when none is under way, or its place or request is unreadable
    (:data:`UNDER_WAY`): the sweep then starts over from the first id."""
    return None if UNDER_WAY.intersection(state.unreadable) else state.sweep_after


def record_sweep(state: MerchantState, after: str | None) -> None:
    """What a sweeping poll (or a first read) saves. Suspects left after ``after``: the
    sweep is under way (``sweep_after``), still serving the request it served so far, or,
    as it starts, the ``sweep_request`` this poll read (``sweep_for``). ``after`` None: the
    sweep ended, and records done the request it served, not one asked for since (a
    webhook's new token): that one stays open, and the next poll sweeps from the first id,
    reading the suspects this sweep passed before it was asked. Done, the request takes an
    operator's permission (``sweep_request_done``) with it."""
    served = state.sweep_for if continued_after(state) is not None else state.sweep_request
    if after is None:
        state.sweep_request_done, served = served, None
    state.sweep_after, state.sweep_for = after, served
    state.swept = True
    _replaced_place(state)


def ask_for_sweep(state: MerchantState, done: str) -> None:
    """``done`` written as ``sweep_request_done`` by a command (``restore catch-up``,
    ``sweep allow-deletions``, ``withdraw-deletions``), in the state's versioned write:
    another value than the request, so a sweep is asked for, and any sweep under way is
    dropped, so the next starts from the first id: it serves this request (and its
    permission, or none), never one an earlier sweep half read."""
    state.sweep_request_done = done
    state.sweep_after = state.sweep_for = None
    _replaced_place(state)


def _replaced_place(state: MerchantState) -> None:
    """The sweep's place written anew: no longer unreadable, so the save writes it (while
    unreadable, the save leaves it as stored: a failed poll keeps the sweep asked for)."""
    state.unreadable = tuple(name for name in state.unreadable if name not in UNDER_WAY)


REFUSED = "refused: "
"""How a refused sweep's ``sweep`` fact begins (:meth:`SweepPlan.refusal`): what
:attr:`esl_sync.sync.poll_outcome.PollOutcome.sweep_refused` reads, one text for both."""


@dataclass(frozen=True)
class SweepPlan:
    """Products Clover did not list, unless the sweep is refused; ``batch`` those this poll
    confirms one by one, ``after`` the id the next poll goes on after (None: the last)."""

    suspects: list[ProductKey]
    active: int
    refused: bool
    batch: list[ProductKey]
    after: str | None

    def refusal(self) -> str:
        """The poll's ``sweep`` fact of a refused sweep."""
        return f"{REFUSED}{len(self.suspects)} of {self.active} missing"

    def summary(self, removed: int, *, permitted: bool, continued: bool) -> str:
        """The poll's ``sweep`` fact: how many of the missing it removed; how many it
        confirmed when that was bounded (a sweep over more than one poll, or allowed)."""
        told = f"removed {removed} of {len(self.suspects)} missing"
        if permitted or continued or self.after is not None:
            told += f", {len(self.batch)} confirmed"
        return told + (" (deletions allowed)" if permitted else "")


def plan_sweep(
    active: Collection[ProductKey],
    listed: Set[str],
    max_delete_fraction: Decimal,
    always_allowed: int = 0,
    *,
    permitted: bool = False,
    after: str | None = None,
    limit: int = MAX_CONFIRMATIONS_PER_POLL,
) -> SweepPlan:
    """Suspects are active products whose Clover id was not listed. More than
    ``max_delete_fraction`` of the active products missing at once is more likely a bad
    listing than a mass deletion: the sweep is refused and removes nothing. Up to
    ``always_allowed`` suspects are never refused, so a small store can still lose an item
    (one of four is already 25 %). ``permitted`` (the operator's permission:
    :func:`deletions_allowed`) refuses none: every suspect is still confirmed one by one.

    The refusal judges every suspect; the batch is the first ``limit`` ids after ``after``
    (an unfinished sweep's: :func:`continued_after`), each with all its keys."""
    suspects = sorted(key for key in active if key[0] not in listed)
    allowed = max(Decimal(always_allowed), max_delete_fraction * len(active))
    refused = len(suspects) > allowed and not permitted
    ids = sorted({key[0] for key in suspects if after is None or key[0] > after})
    chosen = set(ids[:limit])
    batch = [key for key in suspects if key[0] in chosen]
    last = ids[limit - 1] if len(ids) > limit else None
    return SweepPlan(suspects, len(active), refused, batch, last)


UNREAD = (CloverRequestRejected, CloverBadResponse, CloverServerError)
"""What Clover may answer one suspect's read with, for that item alone (a 400, a 410,
garbage, a 5xx after the client's retries): the item is not confirmed gone, so it stays,
and the sweep goes on with the others. Anything else (a refused token, the invocation's
time, the network, a 429 after every retry) is the poll's, which fails and is retried."""


def confirmed_gone(
    read: Callable[[str], Mapping[str, Any] | None], ids: Iterable[str], merchant_id: str
) -> set[str]:
    """The ids whose single-item read answers 404 (or flags the item deleted). One whose
    read Clover keeps refusing (:data:`UNREAD`) is kept, named and counted
    (``SweepReadsFailed``), not the end of the poll: before, one such item failed every
    sweeping poll of the merchant, so its catalog's changes never reached the shelf."""
    gone: set[str] = set()
    unread: dict[str, str] = {}
    for item_id in ids:
        try:
            item = read(item_id)
        except UNREAD as error:
            unread[item_id] = f"{type(error).__name__}: {error}"[:200]
            continue
        if item is None or is_deleted(item):
            gone.add(item_id)
    if unread:
        metrics.add_metric(name="SweepReadsFailed", unit=MetricUnit.Count, value=len(unread))
        logger.warning(
            "sweep: items whose read Clover refused are kept until a later sweep",
            merchant_id=merchant_id,
            unread=dict(list(unread.items())[:20]),
            count=len(unread),
        )
    return gone
