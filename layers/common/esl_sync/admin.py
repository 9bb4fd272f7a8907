"""Operator actions shared by the CLI and the local stack: merchants, status, repairs."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from esl_sync.credentials import CloverTokens
from esl_sync.merchant_ports import (
    FenceCount,
    FenceCounter,
    MerchantChanges,
    MerchantEditor,
    MerchantSetting,
    SeenFences,
    StoreWriter,
    StoreWritten,
)
from esl_sync.messages import LabelVerify, PollRequest
from esl_sync.ports import (
    DeadLetterQueue,
    LabelLedger,
    LabelQueue,
    MerchantDirectory,
    PollQueue,
    StateStore,
    TokenStore,
)
from esl_sync.records import (
    Fence,
    LabelConflict,
    LabelCounts,
    LastVerify,
    Merchant,
    RefusedItem,
    StaleLabel,
)
from esl_sync.settings import Settings
from esl_sync.sync.fleet import fleet_health, judged_since
from esl_sync.sync.heal import HealOutcome, heal_merchant
from esl_sync.sync.sweep import continued_after, deletions_allowed
from esl_sync.verify_ports import StatusLedger


class UnknownMerchantError(LookupError):
    """The merchant id is not in the ``merchants`` table."""


class NoStoreCodeError(LookupError):
    """The merchant has no Hipoink store code: it has no labels to act on."""


def add_merchant(
    directory: StoreWriter,
    tokens: TokenStore,
    merchant: Merchant,
    token: str | CloverTokens | None,
    *,
    keep: Collection[MerchantSetting] = (),
) -> str | None:
    """Register (or update) a merchant; its Clover token (plain, or a v2 pair) goes to the
    encrypted state only, and new tokens lift a ``needs_reauth`` mark. A registered one
    keeps the settings in ``keep`` as they are then (one statement: see
    :meth:`esl_sync.merchant_ports.StoreWriter.register`). The store code the write replaced
    (None: a new merchant), for :func:`relabel_if_moved`.

    All or nothing: the token is encrypted first (a token KMS refuses leaves nothing
    written), then the row is written and the ciphertext stored before the row commits
    (a refused write leaves the row as it was).
    """
    if not token:
        return directory.register(merchant, keep=keep).replaced
    pair = CloverTokens.plain(token) if isinstance(token, str) else token
    sealed = tokens.seal_tokens(merchant.merchant_id, pair)
    written = directory.register(
        merchant, then=lambda: tokens.write_sealed_tokens(merchant.merchant_id, sealed), keep=keep
    )
    return written.replaced


def set_store(directory: StoreWriter, merchant_id: str, store_code: str) -> StoreWritten:
    """Give a merchant its Hipoink store code (``esl-sync merchants set-store``). A merchant
    that installed the app gets it (registered: the caller relabels it if it moved, then
    queues its poll, :func:`poll_now`); one that has not installed yet keeps it for its
    install. The code the write replaced (for :func:`relabel_if_moved`) comes with it."""
    return directory.move_store(merchant_id, store_code)


def relabel_if_moved(
    directory: MerchantDirectory,
    ledger: LabelLedger,
    labels: LabelQueue,
    settings: Settings,
    merchant_id: str,
    previous_store: str | None,
) -> HealOutcome | None:
    """After ``set-store`` or ``merchants add`` gave a labelling merchant another store
    code: every label queued for the new store at once (the store change invalidated what
    the old store acknowledged, in its own transaction: see
    ``esl_sync.store.postgres``), or None when the store did not change. Without this the
    polls' own healing would send them too, a few at a time, after they have been stale
    for ``LABEL_HEAL_AFTER_SECONDS``. The old store's labels are not removed: its code may
    be another merchant's (a typo being corrected). ``previous_store``: the code the write
    replaced, as it read it (:class:`esl_sync.merchant_ports.StoreWriter`): a code read
    before the write may be stale (another ``set-store`` between), B to A read as A to A."""
    merchant = known_merchant(directory, merchant_id)
    if previous_store is None or merchant.store_code in (None, previous_store):
        return None
    return heal_merchant(merchant, ledger, labels, settings, stale_for=timedelta(0))


class Keep(Enum):
    """A merchant setting that a change leaves as it is (None clears it: the stack's)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def set_poll_options(
    directory: MerchantEditor,
    merchant_id: str,
    *,
    clover_base_url: str | Keep | None = KEEP,
    poll_interval_seconds: int | Keep | None = KEEP,
) -> Merchant:
    """Change a registered merchant's own Clover host or poll interval (``esl-sync
    merchants set``); None returns it to the stack's (``CLOVER_API_BASE_URL``,
    ``CLOVER_SYNC_INTERVAL_SECONDS``). Nothing else changes: not its store, tokens or
    whether it is enabled, even when another command changes them at the same time (only
    the named columns are written, in one statement)."""
    changes: MerchantChanges = {}
    if not isinstance(clover_base_url, Keep):
        changes["clover_base_url"] = clover_base_url
    if not isinstance(poll_interval_seconds, Keep):
        changes["poll_interval_seconds"] = poll_interval_seconds
    return _changed(directory, merchant_id, changes)


def set_active(directory: MerchantEditor, merchant_id: str, active: bool) -> Merchant:
    """Enable or disable a merchant's polls (``esl-sync merchants enable``, ``disable``);
    nothing else of it changes, as in :func:`set_poll_options`."""
    return _changed(directory, merchant_id, {"active": active})


def _changed(directory: MerchantEditor, merchant_id: str, changes: MerchantChanges) -> Merchant:
    merchant = directory.change(merchant_id, changes)
    if merchant is None:
        raise UnknownMerchantError(f"unknown merchant {merchant_id!r}")
    return merchant


def merchant_status(
    directory: MerchantDirectory, state: StateStore, ledger: StatusLedger, interval_seconds: int
) -> list[dict[str, Any]]:
    """One row per merchant: is its shelf current, and if not, since when and why.

    "fresh" is the freshness alarm's own test (:mod:`esl_sync.sync.fleet`): a successful
    poll within three of the merchant's intervals. It is None (not judged) for a merchant
    that is not polled, as the alarm leaves it out: one awaiting a store code, or disabled.
    "last_error" is the last failure, never cleared (history), and "last_error_at" when it
    happened. "last_verify" is what the merchant's last label verify found (see
    :func:`verify_shown`), "last_verify_at" when it ended.
    """
    now = datetime.now(UTC)
    blocks = ledger.store_blocks()
    verifies = ledger.last_verifies()
    merchants = directory.all()
    states = state.load_many([m.merchant_id for m in merchants])
    # The ledger's numbers for the whole fleet in one statement (three per merchant were
    # 1,500 round trips for 500 merchants).
    counts = ledger.label_counts([m.merchant_id for m in merchants])
    polled = [m for m in merchants if m.store_code and m.active]
    stale = set(fleet_health(polled, states, 0, interval_seconds, now).stale)
    rows = []
    for merchant in merchants:
        block = blocks.get(merchant.merchant_id)
        last_verify = verifies.get(merchant.merchant_id)
        labels = counts.get(merchant.merchant_id, LabelCounts())
        current = states[merchant.merchant_id]
        since = judged_since(merchant, current)
        judged = bool(merchant.store_code and merchant.active)
        cursor = (
            datetime.fromtimestamp(current.high_water_ms / 1000, UTC)
            if current.high_water_ms is not None
            else None
        )
        last_error = (
            f"{current.last_failure_class}: {current.last_failure_message}"
            if current.last_failure_class
            else None
        )
        rows.append(
            {
                "merchant_id": merchant.merchant_id,
                "store_code": merchant.store_code,
                "active": merchant.active,
                "fresh": merchant.merchant_id not in stale if judged else None,
                "awaiting_store_code": merchant.store_code is None,
                "auth": current.auth_state,
                "cursor": cursor,
                "last_success": current.last_success_at,
                # The age "fresh" judges (judged_since), so none where it is: after a
                # resume or a store code given late it runs from then, as in the gauge
                # StalestMerchantSeconds (the largest lag); last_success stays as it was.
                "lag_seconds": int((now - since).total_seconds()) if since and judged else None,
                "stale_labels": labels.stale_labels,
                "refused_items": labels.refused_items,
                "label_conflicts": labels.label_conflicts,
                # The last failure is history, kept after later successes: when it happened
                # tells an old error (before last_success) from a current one.
                "last_error": last_error,
                "last_error_at": current.last_failure_at,
                "store_blocked": (
                    f"since {_utc_text(block.blocked_at)}: {block.reason}" if block else None
                ),
                # attributes of its state item read as their defaults (edited by hand)
                "deletions_allowed": deletions_allowed(current),  # sweep allow-deletions
                "sweep_after": continued_after(current),  # where a sweep under way goes on
                "unreadable_state": ", ".join(current.unreadable) or None,
                "last_verify_at": last_verify.verified_at if last_verify else None,
                "last_verify": verify_shown(last_verify, merchant.store_code),
            }
        )
    return rows


def verify_shown(last: LastVerify | None, store_code: str | None) -> str:
    """A merchant's last label verify in one line, led by its outcome: ``never``; ``ok`` or
    ``drifted`` (who asked, then the counts); or ``refused`` (who asked, how many verifies
    in a row were refused and when the last one that was not ended, then the reason). The
    store is named when it is not the merchant's store now."""
    if last is None:
        return "never"
    found = last.result
    asked = found.requested_by
    if found.store_code != store_code:
        asked += f", of store {found.store_code}"
    if found.refused is not None:
        completed = (
            f"last completed {_utc_text(last.completed_at)}"
            if last.completed_at
            else "never completed"
        )
        return f"refused ({asked}, {last.refused_in_a_row} in a row, {completed}): {found.refused}"
    outcome = "drifted" if found.drifted else "ok"
    return (
        f"{outcome} ({asked}): {found.compared} compared, {found.drifted} drifted,"
        f" {found.marked} marked, {found.unknown_codes} unknown codes,"
        f" {found.skipped_products} skipped products"
    )


def _utc_text(moment: datetime) -> str:
    """A time as ``status`` prints every time: in UTC, ``2026-11-12 04:00:00Z`` (Postgres
    hands it over in the database session's time zone, which need not be UTC)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def stale_labels(
    directory: MerchantDirectory, ledger: LabelLedger, merchant_id: str
) -> list[StaleLabel]:
    """One merchant's stale labels with their last failure (``esl-sync status --labels``)."""
    known_merchant(directory, merchant_id)
    return ledger.stale_label_details(merchant_id)


def refused_items(
    directory: MerchantDirectory, ledger: LabelLedger, merchant_id: str
) -> list[RefusedItem]:
    """One merchant's refused items (``esl-sync status --labels``, after the stale labels)."""
    known_merchant(directory, merchant_id)
    return ledger.refused_items(merchant_id)


def label_conflicts(
    directory: MerchantDirectory, ledger: LabelLedger, merchant_id: str
) -> list[LabelConflict]:
    """Every product of the merchant whose product code another product claims too; only
    one of them is on the label (``esl-sync status --labels``)."""
    known_merchant(directory, merchant_id)
    return ledger.label_conflicts(merchant_id)


def unblock_store(directory: MerchantDirectory, ledger: LabelLedger, merchant_id: str) -> bool:
    """Lift a configuration block by hand (after fixing the sign, client id or store code)."""
    known_merchant(directory, merchant_id)
    return ledger.unblock_store(merchant_id)


@dataclass(frozen=True)
class HealRefused:
    """A merchant whose heal raised (the error's class and message): its labels may be
    partly queued (the jobs are sent before the ledger marks them); a heal again is safe."""

    merchant_id: str
    refused: str


def heal(
    directory: MerchantDirectory,
    ledger: LabelLedger,
    queue: LabelQueue,
    settings: Settings,
    merchant_id: str | None = None,
    stale_for: timedelta | None = None,
) -> Iterator[HealOutcome | HealRefused]:
    """The self-healing pass for one merchant, or for every active one, each made as the
    caller takes it (to say each as it is done); one that raises is that merchant's alone."""
    merchants = (
        [known_merchant(directory, merchant_id)] if merchant_id else directory.all(active_only=True)
    )
    return (_healed(m, ledger, queue, settings, stale_for) for m in merchants)


def _healed(
    m: Merchant, ledger: LabelLedger, queue: LabelQueue, settings: Settings, age: timedelta | None
) -> HealOutcome | HealRefused:
    try:
        return heal_merchant(m, ledger, queue, settings, stale_for=age)
    except Exception as error:  # this merchant's alone: the fleet goes on, the caller names it
        return HealRefused(m.merchant_id, f"{type(error).__name__}: {error}")


def poll_now(queue: PollQueue, merchant: Merchant) -> bool:
    """Queue one poll of a merchant just added, given new tokens or enabled (``esl-sync
    merchants add``, ``enable``), or asked for (``esl-sync poll``): the dispatcher's
    request, so its labels follow within a minute instead of at its next tick (True). A
    merchant that is not polled (disabled, or awaiting its store code) gets none (False):
    the poller would skip it. A failed send raises; the merchant is saved already and the
    schedule polls it."""
    if not (merchant.active and merchant.store_code):
        return False
    queue.send([PollRequest(merchant_id=merchant.merchant_id, reason="manual")])
    return True


def resync(
    directory: MerchantDirectory,
    state: StateStore,
    ledger: LabelLedger,
    polls: PollQueue,
    labels: LabelQueue,
    settings: Settings,
    merchant_id: str,
) -> HealOutcome | None:
    """Re-read the whole catalog and refresh every label of one merchant.

    The cursor is forgotten (the next poll reads everything, like a first run), every
    acknowledgement is invalidated (so each label counts as stale and a code nobody wants
    is deleted), the labels are queued at once, and a poll is requested. A merchant that
    is not polled (disabled, or awaiting its store code) gets nothing (None), as ``poll``:
    its labels would carry what Postgres held when its polls stopped, and the poll that
    reads its catalog again would be skipped.
    """
    merchant = known_merchant(directory, merchant_id)
    if not (merchant.active and merchant.store_code):
        return None
    current = state.load(merchant_id)
    current.high_water_ms = None
    state.save(current)
    ledger.invalidate_acknowledgements(merchant_id)
    outcome = heal_merchant(merchant, ledger, labels, settings, stale_for=timedelta(0))
    polls.send([PollRequest(merchant_id=merchant_id, reason="manual")])
    return outcome


def verify_labels(directory: MerchantDirectory, queue: LabelQueue, merchant_id: str) -> LabelVerify:
    """Queue a verify of one merchant's labels against what Hipoink holds (``esl-sync
    labels verify``; :mod:`esl_sync.sync.verify`): in its message group, after the jobs
    queued before it. Drifted labels are healed by the merchant's next poll."""
    merchant = known_merchant(directory, merchant_id)
    if not merchant.store_code:
        raise NoStoreCodeError(f"merchant {merchant_id!r} has no Hipoink store code")
    request = LabelVerify(merchant_id=merchant_id, store_code=merchant.store_code)
    queue.send([request])
    return request


def redrive(dead_letters: DeadLetterQueue) -> Iterator[int]:
    """Move every dead-lettered message back to its queue, in order: how many each batch
    moved, as it is moved (a failure stops it: the rest stay dead-lettered).

    Each message is sent back before it is deleted: a crash in between repeats a message
    (harmless: polls are idempotent, label jobs go through the ledger) but loses none.
    """
    while letters := dead_letters.receive():
        dead_letters.send_back(letters)
        dead_letters.delete(letters)
        yield len(letters)


@dataclass(frozen=True)
class FenceCatchUp:
    """One merchant's fence after :func:`catch_up_fences`: the generation Postgres saw, and
    what the state item held: raised, or why nothing was written (:class:`FenceCount`);
    or ``refused``: why its write failed (the error's class and message; ``count`` None)."""

    merchant_id: str
    seen: int
    count: FenceCount | None
    refused: str | None = None


def catch_up_fences(
    directory: MerchantDirectory,
    fences: SeenFences,
    counter: FenceCounter,
    merchant_id: str | None = None,
) -> tuple[Iterator[FenceCatchUp], int]:
    """After the state table went back (a restore, an import, a hand edit lowering
    ``lease_generation``): raise each merchant's lease count (one, or every merchant
    Postgres saw a fence for) to the generation Postgres saw, in the same epoch, so its
    next poll's lease is newer than every poll that wrote; until then each poll that writes
    is refused. A poll that took its lease before stays refused: its generation is lower.
    Also how many registered merchants (the one named, or all) have no fence yet.

    The merchants are read first; each one's write is then made as the caller takes it
    from the iterator (so that it can say each as it is done), and a write refused
    (DynamoDB refusing the item, throttling past the client's retries) is that merchant's
    alone: the rest are still caught up."""
    if merchant_id is not None:
        known_merchant(directory, merchant_id)
        registered = {merchant_id}
    else:
        registered = {m.merchant_id for m in directory.all()}
    seen = fences.seen_fences(merchant_id)
    done = (_fence_caught_up(counter, m, fence) for m, fence in seen.items())
    return done, len(registered - seen.keys())


def _fence_caught_up(counter: FenceCounter, merchant_id: str, fence: Fence) -> FenceCatchUp:
    try:
        count = counter.raise_lease_generation(merchant_id, fence)
    except Exception as error:  # this merchant's alone: the fleet goes on, the caller names it
        return FenceCatchUp(merchant_id, fence.generation, None, f"{type(error).__name__}: {error}")
    return FenceCatchUp(merchant_id, fence.generation, count)


def known_merchant(directory: MerchantDirectory, merchant_id: str) -> Merchant:
    """The merchant of ``merchant_id``; :class:`UnknownMerchantError` (exit 2) when none."""
    merchant = directory.get(merchant_id)
    if merchant is None:
        raise UnknownMerchantError(f"unknown merchant {merchant_id!r}")
    return merchant
