"""An operator command's write of a merchant's state item: loaded, changed and saved in the
write conditional on its version (``StateStore.save``), again while polls win.

``restore catch-up`` and ``sweep allow-deletions``/``withdraw-deletions`` write this way: a
poll running meanwhile finds its own state write refused (the version changed), so it
cannot record anything over the command's change; its next poll reads it.
"""

from __future__ import annotations

from collections.abc import Callable

from esl_sync.ports import StateStore
from esl_sync.records import MerchantState, StaleStateError

SAVE_TRIES = 5
"""Writes refused by a poll's state write in between, before the command gives up (each
poll writes its state once, so one retry nearly always does)."""


def rewrite_state(
    states: StateStore, merchant_id: str, change: Callable[[MerchantState], bool]
) -> MerchantState | None:
    """The merchant's state, changed by ``change`` and saved: the state written, or None
    when ``change`` found nothing to write (it returned False; nothing saved). A write
    refused every try raises StaleStateError, naming the merchant and what to do."""
    for _ in range(SAVE_TRIES):
        state = states.load(merchant_id)
        if not change(state):
            return None
        try:
            states.save(state)
        except StaleStateError:
            continue
        return state
    raise StaleStateError(
        f"merchant {merchant_id}: its state changed on each of {SAVE_TRIES} tries; run the"
        " command again"
    )
