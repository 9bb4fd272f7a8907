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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from esl_sync.clover.client import is_deleted
from esl_sync.clover.errors import CloverAuthError, CloverError
from esl_sync.clover.tokens import ReauthRequired
from esl_sync.clover.transform import to_product
from esl_sync.messages import PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.settings import Settings
from esl_sync.store.interfaces import (
    LabelLedger,
    LabelQueue,
    Merchant,
    MerchantDirectory,
    MerchantState,
    ProductRow,
    ProductStore,
    ProductWriter,
    StaleStateError,
    StateStore,
    StoredTokens,
    TokenProvider,
)
from esl_sync.sync.cursor import next_cursor, read_from
from esl_sync.sync.heal import heal_after_poll
from esl_sync.sync.labels import LabelPlan, LabelTarget, label_target
from esl_sync.sync.lease import merchant_lease
from esl_sync.sync.sweep import plan_sweep, sweep_due

MAX_DELETE_CONFIRMATIONS = 100
"""Webhook-reported deletions confirmed per poll (one Clover request each); the rest wait
for the next poll, and a mass deletion is the sweep's job anyway."""


class ItemPages(Protocol):
    """A walk over Clover items (see :class:`esl_sync.clover.client.ItemWalk`)."""

    @property
    def clover_time_ms(self) -> int | None: ...

    @property
    def fell_back(self) -> bool: ...

    @property
    def max_modified_ms(self) -> int | None: ...

    def __iter__(self) -> ItemPages: ...

    def __next__(self) -> list[dict[str, Any]]: ...


class MerchantCatalog(Protocol):
    @property
    def requests(self) -> int: ...

    def iter_items_modified_since(self, since_ms: int | None) -> ItemPages: ...

    def get_item(self, item_id: str) -> dict[str, Any] | None: ...


class CatalogSource(Protocol):
    def merchant(self, merchant_id: str, token: str, base_url: str) -> MerchantCatalog: ...


@dataclass
class PollDeps:
    merchants: MerchantDirectory
    products: ProductStore
    state: StateStore
    tokens: TokenProvider
    label_queue: LabelQueue
    label_ledger: LabelLedger
    clover: CatalogSource
    settings: Settings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass
class PollOutcome:
    """What one poll did; logged as one line and emitted as metrics."""

    merchant_id: str
    reason: str
    status: str = "ok"  # ok | skipped | busy | needs_reauth | failed
    detail: str | None = None
    seconds_since_last_success: int | None = None
    items_fetched: int = 0
    products_changed: int = 0
    invalid_items: int = 0
    label_upserts: int = 0
    label_deletes: int = 0
    clover_requests: int = 0
    full_walk_fallback: bool = False
    sweep: str | None = None
    deletes_confirmed: int = 0
    duration_ms: int = 0


def poll_merchant(request: PollRequest, deps: PollDeps) -> PollOutcome:
    """Poll one merchant. Raises on failures SQS should retry; returns for everything else."""
    started = time.monotonic()
    outcome = PollOutcome(merchant_id=request.merchant_id, reason=request.reason)
    try:
        _poll(request, deps, outcome)
    except Exception as error:
        outcome.status, outcome.detail = "failed", f"{type(error).__name__}: {error}"
        raise
    finally:
        outcome.duration_ms = int((time.monotonic() - started) * 1000)
        _report(outcome)
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
    with merchant_lease(deps.state, merchant.merchant_id, now_ms=_ms(deps.clock())) as held:
        if not held:
            outcome.status = "busy"
            outcome.detail = "another poll of this merchant is running and covers this request"
            return
        _poll_leased(merchant, merchant.store_code, deps, outcome)


def _poll_leased(merchant: Merchant, store_code: str, deps: PollDeps, outcome: PollOutcome) -> None:
    """The poll proper; the state is read under the lease, so it is the last poll's."""
    merchant_id = merchant.merchant_id
    state = deps.state.load(merchant_id)
    if state.last_success_at is not None:
        age = deps.clock() - state.last_success_at
        outcome.seconds_since_last_success = int(age.total_seconds())
    if state.auth_state == "needs_reauth":
        outcome.status, outcome.detail = "skipped", "needs re-auth: add new Clover tokens"
        return
    base_url = merchant.clover_base_url or deps.settings.clover_api_base_url
    try:
        tokens = deps.tokens.access_token(merchant_id, base_url)
        if tokens is None:
            outcome.status, outcome.detail = "skipped", "no Clover token stored"
            return
        new_high_water, swept, settled = _sync_authorized(
            tokens, base_url, deps, state, store_code, outcome
        )
    except ReauthRequired as error:
        outcome.status, outcome.detail = "needs_reauth", str(error)
        _record_failure(deps, state, error.cause or error)
        return
    except Exception as error:
        _record_failure(deps, state, error)
        raise
    now = deps.clock()
    first_read = state.high_water_ms is None
    state.high_water_ms = new_high_water
    state.poll_count += 1
    state.last_success_at = now
    state.consecutive_failures = 0
    if swept or first_read:
        state.last_sweep_ms = _ms(now)
        state.sweep_request_done = state.sweep_request
    state.settled_deletes = settled
    _save(deps, state)
    _heal(merchant, deps, swept)


def _heal(merchant: Merchant, deps: PollDeps, swept: bool) -> None:
    """Re-queue labels that failed or stayed stale (:mod:`esl_sync.sync.heal`) once the
    poll's effects are committed; its failure is logged, left to the next poll, not raised."""
    try:
        heal_after_poll(merchant, deps.label_ledger, deps.label_queue, deps.settings, swept=swept)
    except Exception:
        logger.exception(
            "self-healing failed; the next poll tries again", merchant_id=merchant.merchant_id
        )


SyncResult = tuple[int | None, bool, frozenset[str]]
"""The new cursor, whether the poll swept, and the pending deletes it settled."""


def _sync_authorized(
    tokens: StoredTokens,
    base_url: str,
    deps: PollDeps,
    state: MerchantState,
    store_code: str,
    outcome: PollOutcome,
) -> SyncResult:
    """``_sync`` with the merchant's access token; after a 401, once more with renewed
    tokens (docs/architecture.md, "Tokens"). Raises ``ReauthRequired`` when none are left."""
    merchant_id = state.merchant_id
    try:
        return _sync_with(tokens, base_url, deps, state, store_code, outcome)
    except CloverAuthError as error:
        logger.info("Clover refused the access token; renewing it", merchant_id=merchant_id)
        renewed = deps.tokens.renew(merchant_id, base_url, tokens, error)
    for counter in ("items_fetched", "products_changed", "invalid_items"):
        setattr(outcome, counter, 0)  # the refused attempt was rolled back
    try:
        return _sync_with(renewed, base_url, deps, state, store_code, outcome)
    except CloverAuthError as error:
        deps.tokens.renew(merchant_id, base_url, renewed, error, refresh=False)
        raise  # newer tokens were stored meanwhile: the redelivery uses them


def _sync_with(
    tokens: StoredTokens,
    base_url: str,
    deps: PollDeps,
    state: MerchantState,
    store_code: str,
    outcome: PollOutcome,
) -> SyncResult:
    catalog = deps.clover.merchant(
        state.merchant_id, tokens.tokens.access_token.get_secret_value(), base_url
    )
    try:
        return _sync(catalog, deps, state, store_code, outcome)
    finally:
        outcome.clover_requests += catalog.requests


def _sync(
    catalog: MerchantCatalog,
    deps: PollDeps,
    state: MerchantState,
    store_code: str,
    outcome: PollOutcome,
) -> SyncResult:
    """Read, write and queue inside one transaction.

    A sweeping poll reads every item, not only the changed ones: the listing a sweep needs
    costs the same requests, and re-reading every item's content too means that whatever
    an incremental read could ever have missed is caught within one sweep interval.
    """
    settings = deps.settings
    merchant_id = state.merchant_id
    plan = LabelPlan()
    sweeping = sweep_due(state, settings, deps.clock())
    listed: set[str] = set()
    with deps.products.transaction() as tx:
        walk = catalog.iter_items_modified_since(
            None if sweeping else read_from(state.high_water_ms, settings.clover_overlap_ms)
        )
        for page in walk:
            outcome.items_fetched += len(page)
            if sweeping:
                listed.update(
                    i["id"] for i in page if isinstance(i.get("id"), str) and not is_deleted(i)
                )
            targets, rows = _transform(page, merchant_id, settings, outcome)
            changes = tx.upsert(merchant_id, rows)
            outcome.products_changed += len(changes)
            plan.add(changes, targets)
        outcome.full_walk_fallback = walk.fell_back
        settled = _confirm_deletes(catalog, tx, state, plan, outcome)
        if sweeping:
            outcome.sweep = _sweep(catalog, tx, listed, merchant_id, settings, plan, outcome)
        if plan.touched:  # which product each touched code shows now, and the version
            owners = tx.label_owners(merchant_id, plan.touched)
            plan.resolve(owners, lambda product: label_target(product, settings).record)
        jobs = plan.jobs(merchant_id, store_code, settings.hipoink_batch_size)
        deps.label_queue.send(jobs)
        outcome.label_upserts = len(plan.upserts)
        outcome.label_deletes = len(plan.deletes - plan.upserts.keys())
    if walk.max_modified_ms is not None and walk.clover_time_ms is None:
        # Safe (the next poll repeats the read) but it would repeat forever unnoticed.
        metrics.add_metric(name="CloverClockMissing", unit=MetricUnit.Count, value=1)
        logger.warning(
            "Clover sent no Date header: the cursor stays where it was",
            merchant_id=state.merchant_id,
        )
    cursor = next_cursor(state.high_water_ms, walk.max_modified_ms, walk.clover_time_ms)
    return cursor, sweeping, settled


def _confirm_deletes(
    catalog: MerchantCatalog,
    tx: ProductWriter,
    state: MerchantState,
    plan: LabelPlan,
    outcome: PollOutcome,
) -> frozenset[str]:
    """Items a webhook reported deleted: each one we hold is read alone and removed on a
    404 (or a deleted flag), like a sweep suspect. Returns the ids dealt with, which the
    state save clears once this transaction has committed."""
    batch = frozenset(sorted(state.pending_deletes)[:MAX_DELETE_CONFIRMATIONS])
    if not batch:
        return batch
    merchant_id = state.merchant_id
    held = [key for key in tx.active_keys(merchant_id) if key[0] in batch]
    confirmed = [key for key in held if _gone(catalog.get_item(key[0]))]
    changes = tx.mark_deleted(merchant_id, confirmed)
    plan.add(changes, {})
    outcome.products_changed += len(changes)
    outcome.deletes_confirmed = len(changes)
    return batch


def _transform(
    page: list[dict[str, Any]], merchant_id: str, settings: Settings, outcome: PollOutcome
) -> tuple[dict[tuple[str, str], LabelTarget], list[ProductRow]]:
    targets: dict[tuple[str, str], LabelTarget] = {}
    rows: list[ProductRow] = []
    for raw in page:
        try:
            product = to_product(
                raw, merchant_id=merchant_id, code_fields=settings.clover_product_code_fields
            )
        except ValueError as error:  # InvalidItem (no usable id); anything else is a bug
            outcome.invalid_items += 1
            logger.warning("item rejected", merchant_id=merchant_id, error=str(error)[:300])
            continue
        if product.refused:
            outcome.invalid_items += 1
            logger.warning("item refused", merchant_id=merchant_id, error=product.validation_error)
        target = label_target(product, settings)
        targets[product.key] = target
        rows.append(ProductRow(product, target.label_hash))
    return targets, rows


def _sweep(
    catalog: MerchantCatalog,
    tx: ProductWriter,
    listed: set[str],
    merchant_id: str,
    settings: Settings,
    plan: LabelPlan,
    outcome: PollOutcome,
) -> str:
    """Remove products Clover did not list, each confirmed by a 404 first (see
    :func:`esl_sync.sync.sweep.plan_sweep`); a refused sweep raises ``SweepRefused``."""
    sweep = plan_sweep(
        tx.active_keys(merchant_id),
        listed,
        settings.clover_max_delete_fraction,
        settings.clover_sweep_always_allowed,
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
        return f"refused: {len(sweep.suspects)} of {sweep.active} missing"
    confirmed = [key for key in sweep.suspects if _gone(catalog.get_item(key[0]))]
    changes = tx.mark_deleted(merchant_id, confirmed)
    plan.add(changes, {})
    outcome.products_changed += len(changes)
    metrics.add_metric(name="SweepDeletions", unit=MetricUnit.Count, value=len(changes))
    return f"removed {len(changes)} of {len(sweep.suspects)} missing"


def _gone(item: dict[str, Any] | None) -> bool:
    """A 404, or (should Clover answer so) the item itself flagged deleted."""
    return item is None or is_deleted(item)


def _record_failure(deps: PollDeps, state: MerchantState, error: Exception) -> None:
    state.last_failure_at = deps.clock()
    state.last_failure_class = type(error).__name__
    state.last_failure_message = str(error)[:500]
    state.consecutive_failures += 1
    if isinstance(error, CloverError):
        metrics.add_metric(name="CloverErrors", unit=MetricUnit.Count, value=1)
    _save(deps, state)


def _save(deps: PollDeps, state: MerchantState) -> None:
    try:
        deps.state.save(state)
    except StaleStateError as error:
        logger.warning("merchant state not saved; the next poll repeats", error=str(error))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _report(outcome: PollOutcome) -> None:
    """One log line and the metrics of a poll.

    ``SecondsSinceLastSuccess`` is how old the merchant's data was when this poll began;
    it has no merchant dimension (the log line names the merchant), so its Maximum is
    the stalest merchant, which is what a freshness alarm watches.
    """
    logger.info("poll finished", **asdict(outcome))
    if outcome.seconds_since_last_success is not None:
        metrics.add_metric(
            name="SecondsSinceLastSuccess",
            unit=MetricUnit.Seconds,
            value=outcome.seconds_since_last_success,
        )
    for name, value in (
        ("Polls", 1),
        ("ItemsFetched", outcome.items_fetched),
        ("ProductsChanged", outcome.products_changed),
        ("InvalidItems", outcome.invalid_items),
        ("LabelUpsertsQueued", outcome.label_upserts),
        ("LabelDeletesQueued", outcome.label_deletes),
        ("CloverRequests", outcome.clover_requests),
        ("FullWalkFallbacks", int(outcome.full_walk_fallback)),
        ("DeletesConfirmed", outcome.deletes_confirmed),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
