"""After restoring the Postgres database from a backup: ``esl-sync restore catch-up``.

A restore (point-in-time, a snapshot) puts the database back while DynamoDB (cursors,
leases, tokens), the queues and Hipoink's shelf stay where they were. Three things follow
(docs/architecture.md, "After restoring the database"):

* the ``label_versions`` sequence goes back, so a job made before the restore (still
  queued, or dead-lettered and redriven) outranks every version the restored database
  issues for a while: once it is acknowledged, later changes are skipped as older;
* the product rows go back, while each merchant's cursor stays past the changes that made
  them newer: incremental polls never read those items again, and an item deleted in
  Clover since the backup is an active row again (only a sweep confirms deletions);
* merchants registered after the backup have no ``merchants`` row, only a state item.

The catch-up moves the sequence past every version issued before it, then makes each
merchant's next poll a sweep (it reads the whole catalog, confirms each active row Clover no
longer lists, and sends what differs under the new versions), a first read too (a state
item without a readable cursor), and names each state item without a row. (A first read
not asked to sweep would leave the deleted items' rows, and a verify's heal would put
their labels back on the shelf.)
"""

from __future__ import annotations

from dataclasses import dataclass

from esl_sync.merchant_ports import LabelVersions, StateItems, VersionsRaised
from esl_sync.ports import MerchantDirectory, StateStore
from esl_sync.records import MerchantState
from esl_sync.state_rewrite import rewrite_state
from esl_sync.sync.sweep import ask_for_sweep

CATCH_UP_SWEEP = "restore catch-up"
"""The ``sweep_request_done`` the catch-up writes: another value than the state's
``sweep_request`` (a webhook's is a random hex token), so a sweep is asked for
(:attr:`esl_sync.records.MerchantState.sweep_requested`) until a sweep that began after it
ends and records it as done (a sweep under way is dropped:
:func:`~esl_sync.sync.sweep.ask_for_sweep`)."""


@dataclass(frozen=True)
class MerchantCaughtUp:
    """One merchant after the catch-up: whether it has a ``merchants`` row (``registered``;
    False: a state item only) and whether it had a cursor (its next poll sweeps either way;
    without one it is a first read, which sweeps because it was asked to); ``refused``: why
    its sweep could not be made due (the error's class and message; nothing written)."""

    merchant_id: str
    registered: bool
    had_cursor: bool
    refused: str | None = None


def raise_versions(versions: LabelVersions) -> VersionsRaised:
    """First, the versions: raised to the database server's clock in microseconds since
    1970: every version issued before is below it as long as the sequence never got there,
    that is, fewer than 1,000 versions a millisecond were issued on average since 1970 (or
    since the last run; a busy fleet issues ten a second). That margin also covers a
    version drawn while the statement runs (``setval`` does not wait for ``nextval``).
    Then (:func:`merchants_to_catch_up`, :func:`catch_up_merchant`) the sweeps: the whole
    catalog each merchant's next poll reads goes out under versions no job from before the
    restore outranks. Safe to run again (the sequence only moves forward; a sweep due costs
    one more full read) and while polls run (:func:`_sweep_next`)."""
    return versions.raise_label_versions()


def merchants_to_catch_up(
    directory: MerchantDirectory, items: StateItems
) -> list[tuple[str, bool]]:
    """Every merchant with a ``merchants`` row or a state item (a Scan of the table), in
    order, each with whether it has a row."""
    registered = {m.merchant_id for m in directory.all()}
    return [(m, m in registered) for m in sorted(registered | set(items.state_item_ids()))]


def catch_up_merchant(states: StateStore, merchant_id: str, registered: bool) -> MerchantCaughtUp:
    """One merchant's item: a write refused (DynamoDB refusing the item, throttling past the
    client's retries, polls winning every try) is that merchant's alone: the fleet goes on,
    and the command names it."""
    try:
        return MerchantCaughtUp(merchant_id, registered, _sweep_next(states, merchant_id))
    except Exception as error:
        return MerchantCaughtUp(merchant_id, registered, False, f"{type(error).__name__}: {error}")


def _sweep_next(states: StateStore, merchant_id: str) -> bool:
    """Make the merchant's next poll a sweep (``last_sweep_ms`` cleared, and a sweep asked
    for: :data:`CATCH_UP_SWEEP`, which a first read heeds too; see
    :func:`esl_sync.sync.sweep.sweep_due`) in a write conditional on the state's version,
    which it counts up (:func:`~esl_sync.state_rewrite.rewrite_state`): a poll running
    meanwhile finds its own state write refused (it cannot record a sweep over this; its
    next poll sweeps). Whether it had a cursor (without one, possibly unreadable, its next
    poll is a first read, of the whole catalog, and sweeps as asked)."""

    def ask(state: MerchantState) -> bool:
        state.last_sweep_ms = None
        ask_for_sweep(state, CATCH_UP_SWEEP)
        return True

    saved = rewrite_state(states, merchant_id, ask)
    return saved is not None and saved.high_water_ms is not None
