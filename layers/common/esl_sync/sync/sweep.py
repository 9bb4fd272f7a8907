"""When a deletion sweep runs, and which products it may remove.

Clover's list of changes does not reliably show deletions, so now and then a sweep lists
every id and compares. A listing that misses items would make them look deleted, so each
suspect is confirmed by the caller (404) and a sweep that would remove too much removes
nothing at all.
"""

from __future__ import annotations

from collections.abc import Collection, Set
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from esl_sync.records import MerchantState
from esl_sync.settings import Settings

ProductKey = tuple[str, str]


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
) -> SweepPlan:
    """Suspects are active products whose Clover id was not listed. More than
    ``max_delete_fraction`` of the active products missing at once is more likely a bad
    listing than a mass deletion: the sweep is refused and removes nothing. Up to
    ``always_allowed`` suspects are never refused, so a small store can still lose an item
    (one of four is already 25 %)."""
    suspects = sorted(key for key in active if key[0] not in listed)
    allowed = max(Decimal(always_allowed), max_delete_fraction * len(active))
    refused = len(suspects) > allowed
    return SweepPlan(suspects=suspects, active=len(active), refused=refused)
