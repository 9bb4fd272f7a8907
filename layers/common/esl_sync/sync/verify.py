"""Verifying a merchant's labels against what Hipoink holds, and marking those that drifted.

The label ledger (``label_state``) records what Hipoink *acknowledged*. Hipoink can come to
hold otherwise: a call that timed out on our side lands late, after a newer one for the
same label was acknowledged; store staff edit a product in Hipoink's console; Hipoink is
restored from a backup. Nothing then counts the label stale. A verify (a
:class:`esl_sync.messages.LabelVerify` on the label queue, run by the Hipoink sender, the
only function that calls Hipoink) pages through the store's products (``product/query``)
and compares each label acknowledged with what Hipoink holds under its code:

* a label whose product still wants exactly what was acknowledged is rebuilt from the
  product (:func:`esl_sync.hipoink.records.to_record`, held equal to the hash) and compared
  field by field over the fields we send, tolerant of representation: text trimmed, a
  value that is a decimal number on both sides compared as a number (``"2.5"`` is
  ``"2.50"``), a field no product of the answer carries taken as one the listing does not
  report (not compared), a missing or null value as empty text;
* a label acknowledged as deleted must not be held;
* any other label is stale already (a job or the heal is on its way): not compared.

A label missing or different has *drifted*: the ledger stops counting it current
(``mark_drifted``: failure class ``drift``, naming the fields), and the heal that follows
the merchant's next poll re-sends the product's current record under a new version
(:mod:`esl_sync.sync.heal`). Codes Hipoink holds that the ledger does not know are counted
and logged, never touched: a store's codes may be another system's.

Nothing is marked when the reading cannot be trusted, and the verify is never retried
(it would hold the store's label jobs behind it in its message group): a Hipoink error, an
answer :func:`esl_sync.hipoink.client.held_page` cannot read as a list of products (one
product it cannot read is skipped, or its field counted as differing: it never spoils the
others), a listing shorter than the
total it reported, pages that repeat, too little time left, or a systematic difference
(more labels drifted than ``LABEL_VERIFY_MAX_DRIFT_FRACTION`` of those compared, beyond
:data:`ALWAYS_ALLOWED`: an answer format read wrong looks exactly like that). Each is one
error line and ``LabelVerifyRefused``; the next verify tries again.

What each verify found, or the refusal's reason, is then recorded as the merchant's last
verify (:func:`verify_result`, written by the sender) for ``esl-sync status``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from esl_sync.deadline import OutOfTime
from esl_sync.hipoink.errors import HipoinkError
from esl_sync.hipoink.records import HipoinkRecord, label_hash, to_record
from esl_sync.messages import LabelVerify
from esl_sync.observability import MetricUnit, first_named, logger, metrics
from esl_sync.records import Drift, VerifyResult, VerifyTarget
from esl_sync.settings import Settings
from esl_sync.verify_ports import HeldProducts, VerifyLedger

PAGE_SIZE = 100
"""Products asked for per ``product/query`` (its ``f2``): a store of 2,000 is 20 calls."""
MAX_PAGES = 1000
"""A listing longer than this (100,000 products) is refused, not read on forever."""
ALWAYS_ALLOWED = 3
"""Drifted labels marked whatever the fraction: a small store's one edited label is not a
systematic difference (one of two is already 50 %)."""
NOT_HELD = "not held"
HELD_AFTER_DELETE = "held though deleted"
_LOGGED_CODES = 20
REFUSAL_MAX_CHARS = 200
"""Of a refusal's reason, what is recorded: our own reasons are shorter; one that quotes
Hipoink (its ``error_msg``, up to 500 characters) keeps its start, which names it."""
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)", re.ASCII)


class VerifyRefused(Exception):
    """The reading cannot be trusted: nothing is marked (the message says why)."""


@dataclass
class VerifyDeps:
    ledger: VerifyLedger
    hipoink: HeldProducts
    settings: Settings


@dataclass
class VerifyOutcome:
    merchant_id: str
    store_code: str
    reason: str
    verified: int = 0  # labels compared with what Hipoink holds
    drifted: list[str] = field(default_factory=list)  # found drifted
    marked: int = 0  # ... and marked (still as compared)
    stale: int = 0  # not compared: stale already (a job or the heal is on its way)
    not_rebuilt: int = 0  # not compared: the sender's settings make another record
    unknown_codes: list[str] = field(default_factory=list)  # held, not in the ledger
    skipped: int = 0  # held products without a usable code (another system's): not read
    pages: int = 0
    refused: str | None = None


def verify_labels(
    request: LabelVerify, deps: VerifyDeps, before_call: Callable[[], None] | None = None
) -> VerifyOutcome:
    """Compare the merchant's acknowledged labels with Hipoink's products and mark the
    drifted ones; never raises for what Hipoink answers (see the module docstring).
    ``before_call`` runs before each page and may refuse it (:class:`OutOfTime`)."""
    outcome = VerifyOutcome(request.merchant_id, request.store_code, request.reason)
    try:
        _verify(request, deps, before_call, outcome)
    except (VerifyRefused, HipoinkError, OutOfTime) as refusal:
        outcome.refused = str(refusal)
    _report(outcome)
    return outcome


def _verify(
    request: LabelVerify,
    deps: VerifyDeps,
    before_call: Callable[[], None] | None,
    outcome: VerifyOutcome,
) -> None:
    merchant_id, store = request.merchant_id, request.store_code
    targets = deps.ledger.verify_targets(merchant_id, store)
    if targets is None:
        raise VerifyRefused(f"store {store} is no longer the merchant's")
    expected, outcome.stale, outcome.not_rebuilt = expected_labels(targets, deps.settings)
    held: dict[str, list[Mapping[str, object]]] = {}
    for page in _pages(deps.hipoink, store, before_call, outcome):
        for product in page:
            held.setdefault(str(product["pc"]), []).append(product)
    reported = {name for products in held.values() for p in products for name in p}
    drifts = []
    for pc, (target, record) in expected.items():
        fields = drifted_fields(record, held.get(pc, []), reported)
        if fields:
            drifts.append(Drift(pc, fields, target.label_hash, target.version))
    outcome.verified = len(expected)
    outcome.drifted = [d.pc for d in drifts]
    outcome.unknown_codes = sorted(held.keys() - {t.pc for t in targets})
    fraction = deps.settings.label_verify_max_drift_fraction
    allowed = max(Decimal(ALWAYS_ALLOWED), fraction * len(expected))
    if len(drifts) > allowed:
        raise VerifyRefused(
            f"{len(drifts)} of {len(expected)} labels differ, more than"
            f" LABEL_VERIFY_MAX_DRIFT_FRACTION allows: an answer read wrong? nothing marked"
        )
    outcome.marked = deps.ledger.mark_drifted(merchant_id, store, drifts)


def expected_labels(
    targets: list[VerifyTarget], settings: Settings
) -> tuple[dict[str, tuple[VerifyTarget, HipoinkRecord | None]], int, int]:
    """The labels a verify can compare (the record acknowledged, None: deleted), and how
    many it cannot: stale already, and current but not rebuilt to the acknowledged hash
    (the sender's ``HIPOINK_EXTRA_FIELDS`` or ``HIPOINK_VARIABLE_PRICE_TEXT`` are not the
    poller's, or changed since the poll decided)."""
    expected: dict[str, tuple[VerifyTarget, HipoinkRecord | None]] = {}
    stale = 0
    for target in targets:
        if target.label_hash != target.wanted:
            stale += 1  # a job or the heal sends what is wanted
            continue
        record = None
        if target.product is not None:
            record = to_record(
                target.product,
                extra_fields=settings.hipoink_extra_fields,
                variable_price_text=settings.hipoink_variable_price_text,
            )
        if label_hash(record) == target.label_hash:
            expected[target.pc] = (target, record)
    return expected, stale, len(targets) - stale - len(expected)


def _pages(
    hipoink: HeldProducts,
    store: str,
    before_call: Callable[[], None] | None,
    outcome: VerifyOutcome,
) -> Iterator[list[dict[str, object]]]:
    """Every page of the store's products, until a short page or the reported total; a
    listing that repeats a page, reads short of its total or never ends is refused."""
    read, previous = 0, None
    for number in range(1, MAX_PAGES + 1):
        if before_call is not None:
            before_call()
        page = hipoink.query(store, number, PAGE_SIZE)
        outcome.pages = number
        outcome.skipped += page.skipped
        codes = [p["pc"] for p in page.products]
        if codes and codes == previous:
            raise VerifyRefused(f"product/query page {number} repeats the page before it")
        listed = len(codes) + page.skipped  # what the page held, read or not
        read += listed
        yield page.products
        if listed < PAGE_SIZE or (page.total is not None and read >= page.total):
            if page.total is not None and read < page.total:
                raise VerifyRefused(f"product/query listed {read} of a total of {page.total}")
            return
        previous = codes
    raise VerifyRefused(f"product/query lists more than {MAX_PAGES} pages")


def drifted_fields(
    record: HipoinkRecord | None, held: list[Mapping[str, object]], reported: set[str]
) -> tuple[str, ...]:
    """What differs between the label acknowledged (None: deleted) and what Hipoink holds
    under its code (every product it listed with it: a code listed twice counts as
    drifted if either differs); empty when they agree."""
    if record is None:
        return (HELD_AFTER_DELETE,) if held else ()
    if not held:
        return (NOT_HELD,)
    differing = {
        name
        for product in held
        for name, value in record.items()
        if name in reported and not same_value(value, product.get(name))
    }
    return tuple(name for name in record if name in differing)


def same_value(ours: str, theirs: object) -> bool:
    """Whether Hipoink's value shows what ours does: both trimmed, None as empty text, and
    two decimal numbers by value; a boolean or anything else is not text."""
    if theirs is None:
        theirs = ""
    elif isinstance(theirs, bool) or not isinstance(theirs, str | int | float):
        return False
    a, b = ours.strip(), str(theirs).strip()
    if a == b:
        return True
    if len(a) > 40 or len(b) > 40 or not (_NUMBER.fullmatch(a) and _NUMBER.fullmatch(b)):
        return False
    return Decimal(a) == Decimal(b)


def _report(outcome: VerifyOutcome) -> None:
    facts: dict[str, Any] = {
        "merchant_id": outcome.merchant_id,
        "store_code": outcome.store_code,
        "reason": outcome.reason,
        "verified": outcome.verified,
        "drifted": len(outcome.drifted),
        "drifted_codes": first_named(outcome.drifted, _LOGGED_CODES),
        "marked": outcome.marked,
        "stale": outcome.stale,
        "not_rebuilt": outcome.not_rebuilt,
        "unknown_codes": len(outcome.unknown_codes),
        "unknown_codes_named": first_named(outcome.unknown_codes, _LOGGED_CODES),
        "skipped_products": outcome.skipped,
        "pages": outcome.pages,
    }
    if outcome.refused is not None:
        logger.error("label verify refused: nothing marked", refused=outcome.refused, **facts)
        metrics.add_metric(name="LabelVerifyRefused", unit=MetricUnit.Count, value=1)
        return
    # Labels current but not rebuilt: the sender's mapping settings differ from the
    # poller's (the verify then compares less than it should), or changed since.
    say = logger.warning if outcome.not_rebuilt else logger.info
    say("labels verified against Hipoink", **facts)
    metrics.add_metric(name="LabelsVerified", unit=MetricUnit.Count, value=outcome.verified)
    metrics.add_metric(name="LabelsDrifted", unit=MetricUnit.Count, value=outcome.marked)


def verify_result(outcome: VerifyOutcome) -> VerifyResult:
    """What the sender records of ``outcome``: its counts, and the refusal's reason made
    one line of storable text (no NUL, lone surrogate or control character: Postgres or a
    terminal) cut to :data:`REFUSAL_MAX_CHARS` (``refused`` when nothing is left)."""
    refused = None
    if outcome.refused is not None:
        # Imported here: esl_sync.storable loads orjson, which a sender's cold start does
        # not otherwise pay for (see esl_sync.hipoink.client.said).
        from esl_sync.storable import label_text

        refused = label_text(outcome.refused, REFUSAL_MAX_CHARS) or "refused"
    return VerifyResult(
        merchant_id=outcome.merchant_id,
        store_code=outcome.store_code,
        requested_by=outcome.reason,
        compared=outcome.verified,
        drifted=len(outcome.drifted),
        marked=outcome.marked,
        unknown_codes=len(outcome.unknown_codes),
        skipped_products=outcome.skipped,
        refused=refused,
    )
