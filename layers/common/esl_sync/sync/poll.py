"""One poll of one merchant: read what changed in Clover, store it, queue label jobs.

Effects happen in the order that makes a crash harmless (docs/architecture.md): label
jobs are queued, then the product transaction commits, then the cursor advances. A crash
anywhere repeats work on the next delivery; the label ledger keeps repeats off the shelf.

A poll holds the merchant's lease while it runs (:mod:`esl_sync.sync.lease`): a second
delivery meanwhile is acknowledged without work; a failed poll gives it back at once.

Tokens come from ``deps.tokens`` (refreshed before they expire); a 401 renews them once
(tokens stored meanwhile, or a refresh) and retries; refused again, the merchant is marked
``needs_reauth`` and skipped until new tokens are stored. Items a webhook reported deleted
are confirmed one by one on the next poll instead of waiting for the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from esl_sync.clover.errors import CloverAuthError, CloverError
from esl_sync.clover.item_types import ID_PATTERN, is_deleted
from esl_sync.clover.tokens import NOTHING_STORED, NoCloverToken, ReauthRequired, TokenKeeper
from esl_sync.clover.walk import ItemWalk
from esl_sync.credentials import StoredTokens
from esl_sync.messages import PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.ports import (
    CatalogReader,
    CatalogReaders,
    LabelQueue,
    MerchantDirectory,
    ProductStore,
    ProductWriter,
    StaleStateError,
    StateStore,
)
from esl_sync.records import FenceRefused, Item, Merchant, MerchantState, ProductRow, StoredHash
from esl_sync.settings import Settings
from esl_sync.storable import parsed_json_text
from esl_sync.sync.cursor import CLOCK_REFUSALS, cursor_after, read_from
from esl_sync.sync.heal import heal_after_poll
from esl_sync.sync.item_rows import item_row
from esl_sync.sync.labels import LabelPlan, LabelTarget, label_target
from esl_sync.sync.lease import Lease, merchant_lease
from esl_sync.sync.poll_outcome import PollOutcome
from esl_sync.sync.raw_keys import mapping_seed, raw_key, unchanged
from esl_sync.sync.sweep import (
    MAX_CONFIRMATIONS_PER_POLL,
    confirmed_gone,
    continued_after,
    deletions_allowed,
    plan_sweep,
    record_sweep,
    sweep_due,
)
from esl_sync.verify_ports import PollLedger

SKIP_CHECK_MIN_ITEMS = 50
"""A page this long asks first how its items are stored, to skip the unchanged ones before
the transform (one round trip against about 30 µs of CPU an item)."""
MAX_DELETE_CONFIRMATIONS = 100
"""Webhook-reported deletions confirmed per poll (one Clover request each); the rest wait
for the next poll, and a mass deletion is the sweep's job anyway."""


@dataclass
class PollDeps:
    merchants: MerchantDirectory
    products: ProductStore
    state: StateStore
    tokens: TokenKeeper
    label_queue: LabelQueue
    label_ledger: PollLedger
    clover: CatalogReaders
    settings: Settings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    time_left_ms: Callable[[], int] | None = None  # for Clover requests (poll_batch sets it)


def poll_merchant(request: PollRequest, deps: PollDeps) -> PollOutcome:
    """Poll one merchant. A poll SQS should retry ends ``failed`` (``detail`` names the
    error, ``fault`` whose it is); everything else ends in a status of its own. Never
    raises but for a bug of Python itself (``BaseException``)."""
    started = time.monotonic()
    outcome = PollOutcome(merchant_id=request.merchant_id, reason=request.reason)
    try:
        _poll(request, deps, outcome)
    except Exception as error:
        outcome.failed(error)  # the merchant's failure or the poller's own
        if isinstance(error, FenceRefused):  # a newer poll wrote first: nothing committed
            metrics.add_metric(name="PollsFenced", unit=MetricUnit.Count, value=1)
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    return outcome


def _poll(request: PollRequest, deps: PollDeps, outcome: PollOutcome) -> None:
    merchant = deps.merchants.get(request.merchant_id)
    if merchant is None or not merchant.active or not merchant.store_code:
        outcome.status = "skipped"
        outcome.detail = (
            "unknown merchant"
            if merchant is None
            else "merchant disabled"
            if not merchant.active
            else "no Hipoink store code"
        )
        return
    with merchant_lease(deps.state, merchant.merchant_id, now_ms=_ms(deps.clock())) as lease:
        if lease is None:
            outcome.status = "busy"
            outcome.detail = "another poll of this merchant is running and covers this request"
            return
        # Read with the lease: the state is the last poll's.
        _Poll(merchant, merchant.store_code, lease, deps, outcome).run()


@dataclass(frozen=True)
class _Synced:
    """What a committed sync leaves for the merchant's state."""

    cursor: int | None  # the new high-water mark
    swept: bool
    settled: frozenset[str]  # the webhook-reported deletes dealt with


@dataclass(frozen=True)
class _Rows:
    """One page as product rows, and the label each product should show."""

    targets: dict[tuple[str, str], LabelTarget]
    rows: list[ProductRow]


@dataclass
class _Poll:
    """One poll of one merchant under its lease: the merchant, the lease (with the state
    the last poll left and the sealed tokens), and the outcome every step adds to. Each
    step takes what it reads or writes (the catalog, the transaction, the label plan) as
    arguments."""

    merchant: Merchant
    store_code: str
    lease: Lease
    deps: PollDeps
    outcome: PollOutcome
    continue_after: str | None = None  # a sweep left suspects after this id for the next poll

    @property
    def merchant_id(self) -> str:
        return self.merchant.merchant_id

    @property
    def state(self) -> MerchantState:
        return self.lease.state

    @property
    def settings(self) -> Settings:
        return self.deps.settings

    def run(self) -> None:
        """The poll proper: sync with the merchant's tokens, then advance the state."""
        state, outcome = self.state, self.outcome
        if state.last_success_at is not None:
            age = self.deps.clock() - state.last_success_at
            outcome.seconds_since_last_success = int(age.total_seconds())
        if state.auth_state == "needs_reauth":
            outcome.status, outcome.detail = "skipped", "needs re-auth: add new Clover tokens"
            return
        base_url = self.merchant.clover_base_url or self.settings.clover_api_base_url
        try:
            tokens = self.deps.tokens.access_token_from(
                self.merchant_id, base_url, self.lease.sealed
            )
            if tokens is None:  # recorded, so that status says why it is not fresh
                outcome.status, outcome.detail = "skipped", NOTHING_STORED
                self._record_failure(NoCloverToken())
                return
            synced = self._sync_authorized(tokens, base_url)
        except ReauthRequired as error:
            outcome.status, outcome.detail = "needs_reauth", str(error)
            self._record_failure(error.cause or error)
            return
        except FenceRefused:
            raise  # the state is the newer poll's: nothing to record (its lease is gone)
        except Exception as error:
            self._record_failure(error)
            raise
        now = self.deps.clock()
        first_read = state.high_water_ms is None
        state.high_water_ms = synced.cursor
        state.poll_count += 1
        state.last_success_at = now
        state.consecutive_failures = 0
        if synced.swept or first_read:
            state.last_sweep_ms = _ms(now)
            record_sweep(state, self.continue_after)
        state.settled_deletes = synced.settled
        # A verify once the sweep settled the rows: not after a refused one, nor mid-sweep.
        self._heal(synced.swept and not outcome.sweep_refused and self.continue_after is None)
        self._save()

    def _heal(self, swept: bool) -> None:
        """Re-queue labels that failed or stayed stale (:mod:`esl_sync.sync.heal`) once the
        poll's jobs are sent and its products committed, still under the lease (the state
        write after it gives the lease back); its failure is logged, left to the next poll,
        not raised, but for a refused fence: the poll then fails, unsaved."""
        deps, fence = self.deps, self.lease.fence
        try:
            heal_after_poll(
                self.merchant,
                deps.label_ledger,
                deps.label_queue,
                deps.settings,
                swept=swept,
                fence=fence,
            )
        except FenceRefused:
            raise
        except Exception:
            logger.exception(
                "self-healing failed; the next poll tries again", merchant_id=self.merchant_id
            )

    def _sync_authorized(self, tokens: StoredTokens, base_url: str) -> _Synced:
        """``_sync`` with the merchant's access token; after a 401, once more with renewed
        tokens (docs/architecture.md, "Tokens"). Raises ``ReauthRequired`` when none are left."""
        try:
            return self._sync_with(tokens, base_url)
        except CloverAuthError as error:
            logger.info(
                "Clover refused the access token; renewing it", merchant_id=self.merchant_id
            )
            renewed = self.deps.tokens.renew(self.merchant_id, base_url, tokens, error)
        for counter in ("items_fetched", "products_changed", "invalid_items"):
            setattr(self.outcome, counter, 0)  # the refused attempt was rolled back
        try:
            return self._sync_with(renewed, base_url)
        except CloverAuthError as error:
            self.deps.tokens.renew(self.merchant_id, base_url, renewed, error, refresh=False)
            raise  # newer tokens were stored meanwhile: the redelivery uses them

    def _sync_with(self, tokens: StoredTokens, base_url: str) -> _Synced:
        token = tokens.tokens.access_token.get_secret_value()
        catalog = self.deps.clover.merchant(
            self.merchant_id, token, base_url, self.deps.time_left_ms
        )
        try:
            return self._sync(catalog)
        finally:
            self.outcome.clover_requests += catalog.requests

    def _sync(self, catalog: CatalogReader) -> _Synced:
        """Read, write and queue inside one transaction.

        A sweeping poll reads every item, not only the changed ones: the listing a sweep
        needs costs the same requests, and re-reading every item's content too means that
        whatever an incremental read could ever have missed is caught within one sweep
        interval.
        """
        settings, state, outcome = self.settings, self.state, self.outcome
        merchant_id = self.merchant_id
        plan = LabelPlan()
        sweeping = sweep_due(state, settings, self.deps.clock())
        listed: set[str] = set()
        with self.deps.products.transaction(self.lease.fence) as tx:
            walk = ItemWalk(
                catalog,
                None if sweeping else read_from(state.high_water_ms, settings.clover_overlap_ms),
            )
            for page in walk:
                self._write_page(tx, page, plan, listed if sweeping else None)
                del page  # its items and rows are written: not held while the next is read
            outcome.full_walk_fallback = walk.fell_back
            settled = self._confirm_deletes(catalog, tx, plan)
            if sweeping:
                outcome.sweep = self._sweep(catalog, tx, listed, plan)
            if plan.touched:  # which product each touched code shows now, and the version
                owners = tx.label_owners(merchant_id, plan.touched)
                plan.resolve(owners, lambda product: label_target(product, settings).record)
            jobs = plan.jobs(merchant_id, self.store_code, settings.hipoink_batch_size)
            self.deps.label_queue.send(jobs)
            outcome.label_upserts = len(plan.upserts)
            outcome.label_deletes = len(plan.deletes - plan.upserts.keys())
        return _Synced(self._cursor(walk.clover_time_ms), sweeping, settled)

    def _write_page(
        self, tx: ProductWriter, page: list[Item], plan: LabelPlan, listed: set[str] | None
    ) -> None:
        """One page's items upserted, the codes they touched noted (``listed``: a sweep's
        ids so far). Its items, rows and changes go with the call: a poll holds one page."""
        self.outcome.items_fetched += len(page)
        if listed is not None:
            listed.update(
                i["id"] for i in page if isinstance(i.get("id"), str) and not is_deleted(i)
            )
        rows = self._transform(page, self._stored(tx, page))
        changes = tx.upsert(self.merchant_id, rows.rows)
        self.outcome.products_changed += len(changes)
        plan.add(changes, rows.targets)

    def _cursor(self, clover_start_ms: int | None) -> int | None:
        """Where the cursor goes after a complete read (:mod:`esl_sync.sync.cursor`)."""
        state, since = self.state, self.state.last_success_at
        now_ms = _ms(self.deps.clock())
        elapsed = now_ms - _ms(since) if since is not None else None
        cursor, refused = cursor_after(
            state.high_water_ms, clover_start_ms, elapsed, our_now_ms=now_ms
        )
        if refused is not None:
            metric, warning = CLOCK_REFUSALS[refused]
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
            logger.warning(
                warning,
                merchant_id=self.merchant_id,
                clover_time_ms=clover_start_ms,
                cursor_ms=state.high_water_ms,
            )
        return cursor

    def _confirm_deletes(
        self, catalog: CatalogReader, tx: ProductWriter, plan: LabelPlan
    ) -> frozenset[str]:
        """Items a webhook reported deleted: each one we hold is read alone and removed on a
        404 (or a deleted flag), like a sweep suspect (one whose read Clover refuses is
        kept: :func:`~esl_sync.sync.sweep.confirmed_gone`). Returns the ids dealt with, which the
        state save clears once this transaction has committed."""
        batch = frozenset(sorted(self.state.pending_deletes)[:MAX_DELETE_CONFIRMATIONS])
        if not batch:
            return batch
        held = [key for key in tx.active_keys(self.merchant_id) if key[0] in batch]
        gone = confirmed_gone(catalog.get_item, sorted({k[0] for k in held}), self.merchant_id)
        changes = tx.mark_deleted(self.merchant_id, [key for key in held if key[0] in gone])
        plan.add(changes, {})
        self.outcome.products_changed += len(changes)
        self.outcome.deletes_confirmed = len(changes)
        return batch

    def _stored(self, tx: ProductWriter, page: list[Item]) -> Mapping[str, StoredHash]:
        """What the page's items are stored as, when that is worth a round trip: a page of
        many items after the first read (a sweep, a bulk edit, the overlap of one)."""
        if len(page) < SKIP_CHECK_MIN_ITEMS or self.state.high_water_ms is None:
            return {}
        # Only ids a product can have (ID_PATTERN): an item with another is rejected by
        # the transform anyway, and its id (a NUL, a lone surrogate, a megabyte) could make
        # Postgres refuse this query, and with it the page of every later poll.
        usable = ID_PATTERN.fullmatch
        ids = [i for i in (raw.get("id") for raw in page) if isinstance(i, str) and usable(i)]
        return tx.stored_hashes(self.merchant_id, ids)

    def _transform(self, page: list[Item], stored: Mapping[str, StoredHash]) -> _Rows:
        """Each item as a product row, with the label it shows; an item stored as it is,
        under the same mapping, is skipped before the transform (:mod:`.raw_keys`)."""
        merchant_id, settings = self.merchant_id, self.settings
        seed = mapping_seed(settings)
        result = _Rows(targets := {}, rows := [])
        for raw in page:
            text, storable = parsed_json_text(raw)  # the item's one serialization
            key = raw_key(seed, text) if text is not None else None
            known = stored.get(str(raw.get("id"))) if stored else None  # none on a first sync
            if key is not None and known is not None and unchanged(known.content_hash, key):
                self.outcome.invalid_items += known.refused  # still refused, as logged then
                continue
            try:
                row, target, refusal = item_row(
                    raw,
                    text=text,
                    storable=storable,
                    key=key,
                    merchant_id=merchant_id,
                    settings=settings,
                )
            except ValueError as error:  # InvalidItem (no usable id); anything else is a bug
                self.outcome.invalid_items += 1
                logger.warning("item rejected", merchant_id=merchant_id, error=str(error)[:300])
                continue
            if refusal is not None:  # the row unpacked, lists bound: ≈ 0.1 µs an item (issue 15)
                self.outcome.invalid_items += 1
                logger.warning("item refused", merchant_id=merchant_id, error=refusal)
            targets[row.key] = target
            rows.append(row)
        return result

    def _sweep(
        self, catalog: CatalogReader, tx: ProductWriter, listed: set[str], plan: LabelPlan
    ) -> str:
        """Remove products Clover did not list, each confirmed by a 404 first (see
        :func:`esl_sync.sync.sweep.plan_sweep`); a refused sweep removes nothing. At most
        ``MAX_CONFIRMATIONS_PER_POLL`` suspects a poll (500: what fits the poll's time at the
        token's pace, see there); the next poll sweeps on after the last one's id."""
        settings, merchant_id, state = self.settings, self.merchant_id, self.state
        permitted, after = deletions_allowed(state) is not None, continued_after(state)
        sweep = plan_sweep(
            tx.active_keys(merchant_id),
            listed,
            settings.clover_max_delete_fraction,
            settings.clover_sweep_always_allowed,
            permitted=permitted,
            after=after,
            limit=MAX_CONFIRMATIONS_PER_POLL,
        )
        if not sweep.suspects:
            return "nothing missing"
        if sweep.refused:
            metrics.add_metric(name="SweepRefused", unit=MetricUnit.Count, value=1)
            logger.error(
                "sweep refused: too many items missing from Clover's listing; no label removed",
                merchant_id=merchant_id,
                missing=len(sweep.suspects),
                active=sweep.active,
            )
            return sweep.refusal()
        self.continue_after = sweep.after
        gone = confirmed_gone(catalog.get_item, sorted({k[0] for k in sweep.batch}), merchant_id)
        changes = tx.mark_deleted(merchant_id, [key for key in sweep.batch if key[0] in gone])
        plan.add(changes, {})
        self.outcome.products_changed += len(changes)
        metrics.add_metric(name="SweepDeletions", unit=MetricUnit.Count, value=len(changes))
        return sweep.summary(len(changes), permitted=permitted, continued=after is not None)

    def _record_failure(self, error: Exception) -> None:
        state = self.state
        state.last_failure_at = self.deps.clock()
        state.last_failure_class = type(error).__name__
        state.last_failure_message = str(error)[:500]
        state.consecutive_failures += 1
        if isinstance(error, CloverError):
            metrics.add_metric(name="CloverErrors", unit=MetricUnit.Count, value=1)
        self._save()

    def _save(self) -> None:
        """The state, and the lease given back, in one write."""
        try:
            self.lease.save_and_release(self.deps.state)
        except StaleStateError as error:
            # Counted: what it did is committed and the next poll repeats the read, but a
            # steady count says polls outlive their lease (a newer poll that took it and
            # wrote nothing: no fence refused this one) or the state is written beside them
            # (docs/architecture.md, "The lease is a fence").
            metrics.add_metric(name="StateSavesRefused", unit=MetricUnit.Count, value=1)
            logger.warning("merchant state not saved; the next poll repeats", error=str(error))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
