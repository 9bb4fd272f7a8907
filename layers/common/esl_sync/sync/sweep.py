"""When a deletion sweep runs, and which products it may remove.

Clover's list of changes does not reliably show deletions, so now and then a sweep lists
every id and compares. A listing that misses items would make them look deleted, so each
suspect is confirmed by the caller (404) and a sweep that would remove too much removes
nothing at all, unless the operator allowed this merchant's next sweep to go past that
(``esl-sync sweep allow-deletions``: :func:`deletions_allowed`).
"""

from __future__ import annotations

from collections.abc import Collection, Set
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from esl_sync.records import MerchantState
from esl_sync.settings import Settings

ProductKey = tuple[str, str]

ALLOW_DELETIONS = "allow deletions "
"""What ``esl-sync sweep allow-deletions`` writes as ``sweep_request_done`` (followed by the
time it ran): another value than any ``sweep_request`` (a webhook's is a random hex token),
so a sweep is asked for (as ``restore catch-up`` asks), and that sweep may remove more than
``CLOVER_MAX_DELETE_FRACTION``. The sweep that confirmed all its suspects records the
request it read as done, which uses the permission up: the sweep after it is judged by the
fraction again."""
MAX_ALLOWED_CONFIRMATIONS = 500
"""Suspects an allowed sweep confirms per poll (one Clover read each: about 31 s at Clover's
16 requests a second per token, within the poller's 300 s beside the whole catalog's
listing). The rest wait for the next poll, which sweeps again under the same permission
(kept until a sweep confirmed every suspect)."""


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
    finds what it held."""
    if "pending_deletes" in state.unreadable or state.sweep_requested:
        return True
    if state.high_water_ms is None:
        return state.poll_count > 0 or state.last_success_at is not None
    if (state.poll_count + 1) % settings.clover_cleanup_every_n_polls == 0:
        return True
    if state.last_sweep_ms is None:
        return True
    hours = (now.timestamp() * 1000 - state.last_sweep_ms) / 3_600_000
    return hours >= settings.clover_cleanup_interval_hours


def deletions_allowed(state: MerchantState) -> str | None:
    """When the operator allowed the merchant's next sweep past the fraction (the text
    ``esl-sync sweep allow-deletions`` wrote), while no sweep has used that permission up;
    otherwise None."""
    done = state.sweep_request_done
    if state.sweep_requested and done is not None and done.startswith(ALLOW_DELETIONS):
        return done.removeprefix(ALLOW_DELETIONS)
    return None


@dataclass(frozen=True)
class SweepPlan:
    """Products Clover did not list (to confirm one by one), unless the sweep is refused."""

    suspects: list[ProductKey]
    active: int
    refused: bool


def plan_sweep(
    active: Collection[ProductKey],
    listed: Set[str],
    max_delete_fraction: Decimal,
    always_allowed: int = 0,
    *,
    permitted: bool = False,
) -> SweepPlan:
    """Suspects are active products whose Clover id was not listed. More than
    ``max_delete_fraction`` of the active products missing at once is more likely a bad
    listing than a mass deletion: the sweep is refused and removes nothing. Up to
    ``always_allowed`` suspects are never refused, so a small store can still lose an item
    (one of four is already 25 %). ``permitted`` (the operator's permission:
    :func:`deletions_allowed`) refuses none: every suspect is still confirmed one by one."""
    suspects = sorted(key for key in active if key[0] not in listed)
    allowed = max(Decimal(always_allowed), max_delete_fraction * len(active))
    refused = len(suspects) > allowed and not permitted
    return SweepPlan(suspects=suspects, active=len(active), refused=refused)
