"""``esl-sync sweep allow-deletions MID``: the operator's word that a merchant really
deleted more of its catalog than ``CLOVER_MAX_DELETE_FRACTION`` lets a sweep remove.

A sweep that finds that many products missing from Clover's listing removes nothing and
pages (``SweepRefused``): a partial listing is the likelier cause. When the merchant did
delete them (a season's items, a supplier dropped), every later sweep would be refused
again and the labels would stay on the shelf. This command asks for one sweep and lets it
go past the fraction (:data:`esl_sync.sync.sweep.ALLOW_DELETIONS`): each suspect is still
removed only after Clover's single-item read answers 404 or flags it deleted, so an item
that exists but was missing from a partial listing stays. The permission is used up by the
sweep that confirmed every suspect (up to
:data:`~esl_sync.sync.sweep.MAX_CONFIRMATIONS_PER_POLL` a poll, as every sweep; more wait for
the next poll, which sweeps on under it); the sweep after that is judged by the fraction again.
"""

from __future__ import annotations

from datetime import datetime

from esl_sync.admin import known_merchant
from esl_sync.ports import MerchantDirectory, StateStore
from esl_sync.records import Merchant, MerchantState
from esl_sync.state_rewrite import rewrite_state
from esl_sync.sync.sweep import ALLOW_DELETIONS, ask_for_sweep, deletions_allowed

WITHDRAWN = "deletions withdrawn "
"""What ``esl-sync sweep withdraw-deletions`` writes as ``sweep_request_done`` (with the
time): no permission, but a request, so the next sweep is judged by the fraction at once."""


def allow_deletions(
    directory: MerchantDirectory, states: StateStore, merchant_id: str, now: datetime
) -> Merchant:
    """Record the permission in the merchant's state item (``sweep_request_done``, in the
    state's write conditional on its version, as ``restore catch-up`` asks for a sweep): a
    poll running meanwhile finds its own state write refused, so it cannot record a sweep
    over the permission; its next poll sweeps under it, from the first id (a sweep under
    way is dropped: :func:`~esl_sync.sync.sweep.ask_for_sweep`). Running it again while
    the permission waits renews its time. Returns the merchant (UnknownMerchantError: none
    has that id; nothing written)."""
    merchant = known_merchant(directory, merchant_id)
    _rewrite(states, merchant_id, f"{ALLOW_DELETIONS}{now.isoformat(timespec='seconds')}")
    return merchant


def withdraw_deletions(
    directory: MerchantDirectory, states: StateStore, merchant_id: str, now: datetime
) -> bool:
    """Take a waiting permission back (``esl-sync sweep withdraw-deletions MID``): given by
    mistake, or its sweeping polls keep failing (one that succeeds reads the next suspects
    after ``sweep_after``, so the sweep ends; one that fails records nothing, and a
    permitted sweep runs at every poll until it completes).
    ``sweep_request_done`` becomes :data:`WITHDRAWN` and a time, in the same versioned
    write: still a request, so the next sweep comes at once, judged by the fraction again
    (a refused one reads no item alone). Whether a permission was waiting (none: nothing
    written)."""
    known_merchant(directory, merchant_id)
    return _rewrite(states, merchant_id, f"{WITHDRAWN}{now.isoformat(timespec='seconds')}")


def _rewrite(states: StateStore, merchant_id: str, done: str) -> bool:
    """``sweep_request_done`` set to ``done`` in the state's versioned write, retried while
    polls win (:func:`~esl_sync.state_rewrite.rewrite_state`); a withdrawal only while a
    permission waits. Whether it was written."""

    def ask(state: MerchantState) -> bool:
        if done.startswith(WITHDRAWN) and deletions_allowed(state) is None:
            return False
        ask_for_sweep(state, done)
        return True

    return rewrite_state(states, merchant_id, ask) is not None
