"""Clover item → :class:`~esl_sync.products.Product`.

Rules (one row of ``tests/unit/test_clover_transform.py`` each):

* ``price`` and ``cost`` are integer cents and become exact two-place ``Decimal`` dollars;
* ``priceType`` is kept; ``unit`` is ``unitName`` for ``PER_UNIT`` items (fuel: ``gal``);
* the barcode (Hipoink ``pc``) is the first non-blank of ``code_fields``; without one the
  product is stored with ``validation_error`` and never sent to a label;
* a variant (an item in an ``itemGroup``) is its own product; the group id goes to
  ``extra_data``;
* a hidden or deleted item (``hidden``, ``deleted`` or ``deletedTime``) has status
  ``deleted``, i.e. its label is removed; ``extra_data["removed_because"]`` says why;
* a bad value never raises: the product carries a ``validation_error`` naming the item
  and the field. Only an item without a usable ``id`` raises :class:`InvalidItem`, since
  it cannot be stored at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from esl_sync.clover.items import CloverItem
from esl_sync.products import Product

DEFAULT_CODE_FIELDS: tuple[str, ...] = ("sku", "code", "alternateName")
_CENT = Decimal("0.01")


class InvalidItem(ValueError):
    """An item that cannot become a product at all (no usable ``id``)."""


def cents_to_dollars(cents: int) -> Decimal:
    """Integer cents as exact dollars with two places: ``349`` → ``Decimal("3.49")``."""
    return (Decimal(cents) / 100).quantize(_CENT)


def to_product(
    raw: Mapping[str, Any],
    *,
    merchant_id: str,
    code_fields: Sequence[str] = DEFAULT_CODE_FIELDS,
    currency: str = "USD",
) -> Product:
    """The product for one raw Clover item (see the module doc for the rules)."""
    if not isinstance(raw, Mapping):
        raise InvalidItem(f"item is not a JSON object but {type(raw).__name__}")
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        got = "missing" if item_id is None else f"{type(item_id).__name__} {item_id!r}"[:60]
        raise InvalidItem(f"item has no usable 'id' (a non-empty string); got {got}")

    problems: list[str] = []
    item = _validated(raw, item_id, problems)

    name = item.name if item.name is not None else _raw_str(raw, "name")
    if name is None or not name.strip():
        problems.append("name is missing")
    price = _dollars(item.price, "price", problems)
    cost = _dollars(item.cost, "cost", problems)
    price_type = item.priceType or "FIXED"
    unit = item.unitName if price_type == "PER_UNIT" else None

    barcode = _product_code(item, raw, code_fields)
    validation_error = f"item {item_id}: {'; '.join(problems)}" if problems else None
    if barcode is None:
        missing = f"no product code ({', '.join(code_fields)} all empty)"
        validation_error = f"{validation_error}; {missing}" if validation_error else missing

    removed_because: str | None = None
    if item.deleted or item.deletedTime is not None:
        removed_because = "deleted"
    elif item.hidden:
        removed_because = "hidden"

    extra_data: dict[str, Any] = {
        "unit_cost": str(cost) if cost is not None else None,
        "price_type": price_type,
        "modified_time": item.modifiedTime,
        "item_group_id": item.itemGroup.id if item.itemGroup else None,
        "is_age_restricted": item.isAgeRestricted,
        "available": item.available,
    }
    if removed_because:
        extra_data["removed_because"] = removed_because

    return Product(
        source_system="clover",
        merchant_id=merchant_id,
        source_id=item_id,
        source_variant_id="",
        name=name or "",
        barcode=barcode,
        sku=item.sku if item.sku is not None else _raw_str(raw, "sku"),
        price=price,
        cost=cost,
        currency=currency,
        price_type=price_type,
        unit=unit,
        status="deleted" if removed_because else "active",
        extra_data=extra_data,
        raw=dict(raw),
        source_modified_time=item.modifiedTime,
        validation_error=validation_error,
    )


def _validated(raw: Mapping[str, Any], item_id: str, problems: list[str]) -> CloverItem:
    """The item's fields; a field of the wrong type or size is reported and left out."""
    try:
        return CloverItem.model_validate(raw)
    except ValidationError as error:
        details = error.errors(include_url=False)
    problems.extend(_describe(detail) for detail in details)
    bad = {detail["loc"][0] for detail in details if detail["loc"]}
    try:
        return CloverItem.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:  # pragma: no cover - every failing field was left out
        return CloverItem(id=item_id)


def _describe(detail: ErrorDetails) -> str:
    field = ".".join(str(part) for part in detail["loc"]) or "item"
    message = detail["msg"]
    message = message[:1].lower() + message[1:]
    if detail["type"] == "missing":
        return f"{field} is missing"
    return f"{field}: {message} (got {type(detail['input']).__name__})"


def _dollars(cents: int | None, field: str, problems: list[str]) -> Decimal | None:
    if cents is None:
        return None
    if cents < 0:
        problems.append(f"{field} must not be negative")
        return None
    return cents_to_dollars(cents)


def _product_code(item: CloverItem, raw: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """The first non-blank of ``fields``: a checked field when the model has it, else raw."""
    for field in fields:
        value = getattr(item, field) if field in CloverItem.model_fields else raw.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _raw_str(raw: Mapping[str, Any], field: str) -> str | None:
    value = raw.get(field)
    return value if isinstance(value, str) else None
