"""Product → Hipoink product record, and the hash of what a label shows.

A record always has ``pc`` (the barcode), ``pn``, ``pp`` (two decimals) and ``pi`` (the
Clover item id), and ``pu`` for items sold per unit. A ``VARIABLE`` item's price is entered
at the register, so Clover's ``price`` (often 0) is not what the customer pays: its ``pp``
is ``HIPOINK_VARIABLE_PRICE_TEXT`` (empty by default: no price on the shelf), never
Clover's price. A product without a price that needs one gets no record, never ``0.00``.
Label templates that show more use Hipoink's free fields ``f1`` … ``f16``:
``HIPOINK_EXTRA_FIELDS`` (for example ``f1=price_type,f2=unit_cost``) fills them from the
product values in :data:`EXTRA_FIELD_SOURCES`. A mapped value that is absent is sent as
``""``, so a cleared value also clears the label (whether Hipoink keeps omitted fields is
unconfirmed).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_text
from typing import Any, Protocol

HipoinkRecord = dict[str, str]
ExtraFields = tuple[tuple[str, str], ...]
"""(free field, source) pairs, e.g. ``(("f1", "price_type"),)``."""

PRODUCT_SOURCES = ("sku", "cost", "currency", "price_type", "unit")
"""Product attributes a free field may show."""
EXTRA_DATA_SOURCES = ("unit_cost", "item_group_id", "is_age_restricted", "available")
"""Keys of ``products.extra_data`` a free field may show."""
EXTRA_FIELD_SOURCES = PRODUCT_SOURCES + EXTRA_DATA_SOURCES
FREE_FIELDS = tuple(f"f{n}" for n in range(1, 17))


def parse_extra_fields(text: str) -> ExtraFields:
    """``"f1=price_type, f2=unit_cost"`` → pairs; ValueError naming the first bad entry."""
    pairs: list[tuple[str, str]] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        target, _, source = (side.strip() for side in entry.partition("="))
        if target not in FREE_FIELDS or not source:
            raise ValueError(f"{entry!r} is not f1 … f16=SOURCE")
        if source not in EXTRA_FIELD_SOURCES:
            raise ValueError(f"{entry!r}: source must be one of {', '.join(EXTRA_FIELD_SOURCES)}")
        if any(target == seen for seen, _ in pairs):
            raise ValueError(f"{target} is mapped twice")
        pairs.append((target, source))
    return tuple(pairs)


class Labeled(Protocol):
    """What a record is made of: a :class:`esl_sync.products.Product`, or the fields the
    transform made of an item (:class:`esl_sync.clover.transform.ItemFields`, the poll's
    hot path, which builds no model)."""

    @property
    def labelable(self) -> bool: ...
    @property
    def barcode(self) -> str | None: ...
    @property
    def name(self) -> str: ...
    @property
    def price(self) -> Decimal | None: ...
    @property
    def price_type(self) -> str: ...
    @property
    def source_id(self) -> str: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def extra_data(self) -> dict[str, Any]: ...


def to_record(
    product: Labeled,
    *,
    extra_fields: ExtraFields = (),
    variable_price_text: str = "",
    price_text: str | None = None,
) -> HipoinkRecord | None:
    """The full record a label needs, or None when the product must not be on a label.

    Every upsert sends the full record: whether Hipoink keeps omitted fields is unconfirmed.
    ``price_text``: ``f"{product.price:.2f}"`` when the caller already has it (the poll's
    clean items: :attr:`esl_sync.clover.transform.ItemFields.price_text`).
    """
    if not product.labelable or product.barcode is None:
        return None
    if product.price_type == "VARIABLE":
        shown_price = variable_price_text
    elif product.price is not None:
        shown_price = f"{product.price:.2f}" if price_text is None else price_text
    else:
        return None  # refused by the transform; an older row is never shown as 0.00
    record: HipoinkRecord = {
        "pc": product.barcode,
        "pn": product.name,
        "pp": shown_price,
        "pi": product.source_id,
    }
    if product.price_type == "PER_UNIT" and product.unit:
        record["pu"] = product.unit
    for target, source in extra_fields:
        record[target] = _shown(
            getattr(product, source)
            if source in PRODUCT_SOURCES
            else product.extra_data.get(source)
        )
    return record


def _shown(value: object) -> str:
    """A value as label text: money with two decimals, flags as ``1``/``0``, nothing as ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return str(value)


def label_hash(record: HipoinkRecord | None) -> str | None:
    """Digest of exactly what the label shows (free fields included); None without a label.

    It is :func:`esl_sync.products.stable_hash` of the record (the digest the label ledger
    has stored for every label), written by hand for a record, whose keys and values are
    all text: its keys sorted, each key and value as ``json.dumps`` writes text (the
    standard library's own escaping function), in half the time of the general encoder;
    every label of a first sync is hashed. ``tests/unit/test_hipoink_records.py`` checks
    the two agree."""
    if record is None:
        return None
    text = ",".join([f"{_json_text(key)}:{_json_text(record[key])}" for key in sorted(record)])
    return hashlib.sha256(f"{{{text}}}".encode()).hexdigest()[:32]
