"""One poll of one merchant: read what changed in Clover, store it, queue label jobs.

Effects happen in the order that makes a crash harmless (DESIGN.md, "The poll"): label
jobs are queued, then the product transaction commits, then the cursor advances. A crash
anywhere repeats work on the next delivery; the label ledger keeps repeats off the shelf.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from esl_sync.clover.client import is_deleted
from esl_sync.clover.errors import CloverAuthError, CloverError
from esl_sync.clover.transform import InvalidItem, to_product
from esl_sync.hipoink.records import label_hash, to_record
from esl_sync.messages import PollRequest
from esl_sync.observability import MetricUnit, logger, metrics
from esl_sync.settings import Settings
from esl_sync.store.interfaces import (
    LabelQueue,
    MerchantDirectory,
    MerchantState,
    ProductRow,
    ProductStore,
    ProductWriter,
    StaleStateError,
    StateStore,
)
from esl_sync.sync.labels import LabelPlan, LabelTarget

CURSOR_SKEW_MARGIN_MS = 5_000  # Clover's Date header has one-second resolution, and then some


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


class IdListing(Protocol):
    @property
    def ids(self) -> frozenset[str]: ...


class MerchantCatalog(Protocol):
    @property
    def requests(self) -> int: ...

    def iter_items_modified_since(self, since_ms: int | None) -> ItemPages: ...

    def list_all_item_ids(self) -> IdListing: ...

    def get_item(self, item_id: str) -> dict[str, Any] | None: ...


class CatalogSource(Protocol):
    def merchant(self, merchant_id: str, token: str, base_url: str) -> MerchantCatalog: ...


@dataclass
class PollDeps:
    merchants: MerchantDirectory
    products: ProductStore
    state: StateStore
    label_queue: LabelQueue
    clover: CatalogSource
    settings: Settings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)


@dataclass
class PollOutcome:
    """What one poll did; logged as one line and emitted as metrics."""

    merchant_id: str
    reason: str
    status: str = "ok"  # ok | skipped | needs_reauth
    detail: str | None = None
    items_fetched: int = 0
    products_changed: int = 0
    invalid_items: int = 0
    label_upserts: int = 0
    label_deletes: int = 0
    clover_requests: int = 0
    full_walk_fallback: bool = False
    sweep: str | None = None
    duration_ms: int = 0


def poll_merchant(request: PollRequest, deps: PollDeps) -> PollOutcome:
    """Poll one merchant. Raises on failures SQS should retry; returns for everything else."""
    started = time.monotonic()
    outcome = PollOutcome(merchant_id=request.merchant_id, reason=request.reason)
    try:
        _poll(request, deps, outcome)
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
    state = deps.state.load(merchant.merchant_id)
    if state.auth_state == "needs_reauth":
        outcome.status, outcome.detail = "skipped", "needs re-auth: add new Clover tokens"
        return
    token = deps.state.read_token(merchant.merchant_id)
    if token is None:
        outcome.status, outcome.detail = "skipped", "no Clover token stored"
        return
    settings = deps.settings
    catalog = deps.clover.merchant(
        merchant.merchant_id, token, merchant.clover_base_url or settings.clover_api_base_url
    )
    try:
        new_high_water, swept = _sync(catalog, deps, state, merchant.store_code, outcome)
    except CloverAuthError as error:
        outcome.status, outcome.detail = "needs_reauth", str(error)
        _record_failure(deps, state, error, auth_state="needs_reauth")
        return
    except Exception as error:
        _record_failure(deps, state, error)
        raise
    finally:
        outcome.clover_requests = catalog.requests
    now = deps.clock()
    state.high_water_ms = new_high_water
    state.poll_count += 1
    state.last_success_at = now
    state.consecutive_failures = 0
    if swept:
        state.last_sweep_ms = int(now.timestamp() * 1000)
    _save(deps, state)


def _sync(
    catalog: MerchantCatalog,
    deps: PollDeps,
    state: MerchantState,
    store_code: str,
    outcome: PollOutcome,
) -> tuple[int | None, bool]:
    """Read, write and queue inside one transaction; return the new cursor and sweep flag."""
    settings = deps.settings
    merchant_id = state.merchant_id
    since = (
        None
        if state.high_water_ms is None
        else max(0, state.high_water_ms - settings.clover_overlap_ms)
    )
    plan = LabelPlan()
    sweep_due = _sweep_due(state, settings, deps.clock())
    with deps.products.transaction() as tx:
        walk = catalog.iter_items_modified_since(since)
        for page in walk:
            outcome.items_fetched += len(page)
            targets, rows = _transform(page, merchant_id, settings, outcome)
            changes = tx.upsert(merchant_id, rows)
            outcome.products_changed += len(changes)
            plan.add(changes, targets)
        outcome.full_walk_fallback = walk.fell_back
        if sweep_due:
            outcome.sweep = _sweep(catalog, tx, merchant_id, settings, plan, outcome)
        jobs = plan.jobs(merchant_id, store_code, settings.hipoink_batch_size)
        deps.label_queue.send(jobs)
        outcome.label_upserts = len(plan.upserts)
        outcome.label_deletes = len(plan.deletes - plan.upserts.keys())
    return _next_cursor(state.high_water_ms, walk), sweep_due


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
        except InvalidItem as error:
            outcome.invalid_items += 1
            logger.warning("item rejected", merchant_id=merchant_id, error=str(error))
            continue
        if product.validation_error and product.status == "active":
            outcome.invalid_items += 1
        record = to_record(product)
        target = LabelTarget(record, label_hash(record))
        targets[product.key] = target
        rows.append(ProductRow(product, target.label_hash))
    return targets, rows


def _sweep_due(state: MerchantState, settings: Settings, now: datetime) -> bool:
    """Every N-th poll, or when the cleanup interval has passed; never on the first read."""
    if state.high_water_ms is None:
        return False
    if (state.poll_count + 1) % settings.clover_cleanup_every_n_polls == 0:
        return True
    if state.last_sweep_ms is None:
        return True
    hours = (now.timestamp() * 1000 - state.last_sweep_ms) / 3_600_000
    return hours >= settings.clover_cleanup_interval_hours


def _sweep(
    catalog: MerchantCatalog,
    tx: ProductWriter,
    merchant_id: str,
    settings: Settings,
    plan: LabelPlan,
    outcome: PollOutcome,
) -> str:
    """Remove products Clover no longer has, each confirmed by a 404 first.

    A listing that misses many items at once is more likely wrong than a mass deletion:
    above ``CLOVER_MAX_DELETE_FRACTION`` nothing is removed and an alarm's metric is raised.
    """
    active = tx.active_keys(merchant_id)
    listed = catalog.list_all_item_ids().ids
    suspects = [key for key in active if key[0] not in listed]
    if not suspects:
        return "nothing missing"
    if len(suspects) > float(settings.clover_max_delete_fraction) * len(active):
        metrics.add_metric(name="SweepRefused", unit=MetricUnit.Count, value=1)
        logger.error(
            "sweep refused: too many items missing from Clover's listing; no label removed",
            merchant_id=merchant_id,
            missing=len(suspects),
            active=len(active),
        )
        return f"refused: {len(suspects)} of {len(active)} missing"
    confirmed = [key for key in suspects if _gone(catalog.get_item(key[0]))]
    changes = tx.mark_deleted(merchant_id, confirmed)
    plan.add(changes, {})
    outcome.products_changed += len(changes)
    metrics.add_metric(name="SweepDeletions", unit=MetricUnit.Count, value=len(changes))
    return f"removed {len(changes)} of {len(suspects)} missing"


def _gone(item: dict[str, Any] | None) -> bool:
    """A 404, or (should Clover answer so) the item itself flagged deleted."""
    return item is None or is_deleted(item)


def _next_cursor(previous: int | None, walk: ItemPages) -> int | None:
    """``min(max modifiedTime processed, Clover's clock at start − margin)``; never our clock."""
    if walk.max_modified_ms is None or walk.clover_time_ms is None:
        return previous
    return min(walk.max_modified_ms, walk.clover_time_ms - CURSOR_SKEW_MARGIN_MS)


def _record_failure(
    deps: PollDeps, state: MerchantState, error: Exception, *, auth_state: str | None = None
) -> None:
    state.last_failure_at = deps.clock()
    state.last_failure_class = type(error).__name__
    state.last_failure_message = str(error)[:500]
    state.consecutive_failures += 1
    if auth_state:
        state.auth_state = auth_state
        metrics.add_metric(name="NeedsReauth", unit=MetricUnit.Count, value=1)
    if isinstance(error, CloverError):
        metrics.add_metric(name="CloverErrors", unit=MetricUnit.Count, value=1)
    _save(deps, state)


def _save(deps: PollDeps, state: MerchantState) -> None:
    try:
        deps.state.save(state)
    except StaleStateError as error:
        logger.warning("merchant state not saved; the next poll repeats", error=str(error))


def _report(outcome: PollOutcome) -> None:
    logger.info("poll finished", **asdict(outcome))
    for name, value in (
        ("Polls", 1),
        ("ItemsFetched", outcome.items_fetched),
        ("ProductsChanged", outcome.products_changed),
        ("InvalidItems", outcome.invalid_items),
        ("LabelUpsertsQueued", outcome.label_upserts),
        ("LabelDeletesQueued", outcome.label_deletes),
        ("CloverRequests", outcome.clover_requests),
        ("FullWalkFallbacks", int(outcome.full_walk_fallback)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
