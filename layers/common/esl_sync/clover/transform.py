"""Clover item → its product's fields (:class:`ItemFields`, :func:`item_fields`) and
:class:`~esl_sync.products.Product` (:func:`to_product`): every item is stored or named.

:func:`item_fields` is the one definition of the rules below; the poll writes a clean
item's fields without building a model (:mod:`esl_sync.sync.item_rows`).

Rules (one row of ``tests/unit/test_clover_transform.py`` each):

* ``price`` and ``cost`` are integer cents and become exact two-place ``Decimal`` dollars;
* ``priceType`` is kept; ``unit`` is ``unitName`` for ``PER_UNIT`` items (fuel: ``gal``);
* the product code (Hipoink ``pc``) is the first non-blank of ``code_fields``;
* a variant (an item in an ``itemGroup``) is its own product; the group id goes to
  ``extra_data``;
* a hidden or deleted item (``hidden``, ``deleted`` or ``deletedTime``) has status
  ``deleted``, i.e. its label is removed; ``extra_data["removed_because"]`` says why.

What Postgres or Hipoink cannot take is either cleaned or refused by name:

* **cleaned** (the item goes on): NUL, lone surrogates and noncharacters are dropped from
  every string, ``raw`` included (keys too, nested to any depth); a name or unit is made
  one line of label text and cut to Clover's own limit (127, 64);
* **refused** (``validation_error`` names the item and each problem): a field of the wrong
  type (a string, float or boolean for cents, …); a price, cost or time out of range
  (negative, past ``numeric(14,2)`` or ``bigint``); no price on a ``FIXED`` or
  ``PER_UNIT`` item; no name; no product code, or one Hipoink cannot take (a control or
  invisible character, over 64 characters: :func:`esl_sync.storable.product_code`).

A refused item changes no label: its row keeps the label fields of its last accepted
version (see ``esl_sync.store.postgres``), so a shelf never loses a correct older price,
nor gets ``$0.00``, because of a bad edit; the next version Clover sends is judged anew.
A removed item is never refused (its removal is what the shelf needs; values it holds
that cannot be stored are left out). Only an item without a usable ``id`` raises
:class:`InvalidItem`, since it cannot be stored at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from esl_sync.clover.item_types import ID_PATTERN, READ_FIELDS, is_deleted, plain_fields
from esl_sync.storable import (
    BIGINT_MAX,
    MONEY_MAX_CENTS,
    NAME_MAX_LENGTH,
    SKU_MAX_LENGTH,
    UNIT_MAX_LENGTH,
    json_text,
    label_text,
    product_code,
)

if TYPE_CHECKING:  # types only: the models load for an item that is not clean (issue 15)
    from pydantic_core import ErrorDetails

    from esl_sync.products import Product

DEFAULT_CODE_FIELDS: tuple[str, ...] = ("sku", "code", "alternateName")
PRICE_REQUIRED = frozenset({"FIXED", "PER_UNIT"})
"""Price types whose label shows Clover's price: without one the item is refused, never
shown as $0.00. A ``VARIABLE`` price is entered at the register; its label shows
``HIPOINK_VARIABLE_PRICE_TEXT`` instead (see :func:`esl_sync.hipoink.records.to_record`)."""
VALIDATION_ERROR_MAX_CHARS = 1000
_new_tuple = tuple.__new__


class InvalidItem(ValueError):
    """An item that cannot become a product at all (no usable ``id``)."""


def cents_to_dollars(cents: int) -> Decimal:
    """Integer cents as exact dollars with two places: ``349`` → ``Decimal("3.49")``
    (shifting the decimal point is exact, and cheaper than dividing and rounding)."""
    return Decimal(cents).scaleb(-2)


class ItemFields(NamedTuple):
    """What the rules make of one item: the fields of its product but the merchant and the
    raw item, without building a model (a tuple: the poll builds one per item).

    ``clean``: no problem was found, so every value is already what a ``Product``'s
    validation would leave it (text through ``label_text`` or ``product_code``, money and
    times within their columns, ``extra_data`` flat ASCII, the id matching ``ID_PATTERN``):
    the poll writes such an item without a model (:mod:`esl_sync.sync.item_rows`).

    ``price_text``, ``cost_text``: ``str`` of ``price`` and ``cost``, made once for the row,
    ``extra_data["unit_cost"]`` and the label (see :func:`_amount`)."""

    source_id: str
    name: str
    barcode: str | None
    sku: str | None
    price: Decimal | None
    cost: Decimal | None
    currency: str
    price_type: str
    unit: str | None
    status: str
    extra_data: dict[str, Any]
    source_modified_time: int | None
    validation_error: str | None
    clean: bool
    price_text: str | None = None
    cost_text: str | None = None

    @property
    def refused(self) -> bool:
        return self.validation_error is not None

    @property
    def labelable(self) -> bool:
        """The same as :attr:`esl_sync.products.Product.labelable`."""
        return (
            self.status == "active" and self.barcode is not None and self.validation_error is None
        )


def to_product(
    raw: Mapping[str, Any],
    *,
    merchant_id: str,
    code_fields: Sequence[str] = DEFAULT_CODE_FIELDS,
    currency: str = "USD",
    storable: bool | None = None,
) -> Product:
    """The product for one raw Clover item (see the module doc for the rules).

    ``storable``: what :func:`esl_sync.storable.json_text` said of ``raw`` (the caller's one
    serialization of it); None: find out here."""
    fields = item_fields(raw, code_fields=code_fields, currency=currency)
    return product_of(fields, raw, merchant_id=merchant_id, storable=storable)


def item_fields(
    raw: Mapping[str, Any],
    *,
    code_fields: Sequence[str] = DEFAULT_CODE_FIELDS,
    currency: str = "USD",
) -> ItemFields:
    """The rules applied to one raw Clover item (see the module doc); raises
    :class:`InvalidItem` for an item without a usable ``id``."""
    # A dict first: ≈ 0.1 µs sooner than the ABC's check (issue 15), which any other takes.
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise InvalidItem(f"item is not a JSON object but {type(raw).__name__}")
    item_id = _item_id(raw)
    problems: list[str] = []
    item: Mapping[str, Any]
    bad: AbstractSet[str]
    # Nearly every item is plain: read as it is, without the call (≈ 0.05 µs, issue 15).
    if isinstance(raw, dict) and plain_fields(raw):
        item, bad = raw, _NONE_BAD
    else:
        item, bad = _validated(raw, item_id, problems)

    get = item.get  # each field read once: this runs for every item of every page
    name_text = get("name")
    name = label_text(name_text, NAME_MAX_LENGTH) if name_text is not None else ""
    if not name and "name" not in bad:
        problems.append("name is missing")
    price_type = get("priceType") or "FIXED"
    cents = get("price")
    price, price_text = _amount(cents, "price", problems)
    if cents is None and "price" not in bad and price_type in PRICE_REQUIRED:
        problems.append(f"price is missing (a {price_type} item needs one)")
    cost, cost_text = _amount(get("cost"), "cost", problems)
    modified = _time(get("modifiedTime"), "modifiedTime", problems)
    unit = _optional_text(get("unitName"), UNIT_MAX_LENGTH) if price_type == "PER_UNIT" else None
    barcode = _product_code(item, raw, code_fields, bad, problems)

    removed_because: str | None = None
    if is_deleted(raw):
        removed_because = "deleted"
    elif raw.get("hidden") is True:
        removed_because = "hidden"

    group = get("itemGroup")
    extra_data: dict[str, Any] = {
        "unit_cost": cost_text,
        "price_type": price_type,
        "modified_time": modified,
        "item_group_id": group["id"] if group else None,
        "is_age_restricted": get("isAgeRestricted"),
        "available": get("available"),
    }
    if removed_because:
        extra_data["removed_because"] = removed_because
    # The tuple made directly (its fields in order), not through the class's generated
    # ``__new__``: ≈ 0.3 µs → 0.13 an item (issue 15); test_clover_transform reads each field.
    return _new_tuple(
        ItemFields,
        (
            item_id,
            name,
            barcode,
            _optional_text(get("sku"), SKU_MAX_LENGTH),
            price,
            cost,
            currency,
            price_type,
            unit,
            "deleted" if removed_because else "active",
            extra_data,
            modified,
            _named(item_id, problems) if problems and not removed_because else None,
            not problems and _plain_text(currency),
            price_text,
            cost_text,
        ),
    )


def product_of(
    fields: ItemFields, raw: Mapping[str, Any], *, merchant_id: str, storable: bool | None = None
) -> Product:
    """The product of an item's ``fields`` (:func:`item_fields`) and its ``raw`` item."""
    # Imported here, not with the module: the poll writes a clean item without a model and
    # must not load pydantic for it (issue 15: ≈ 110 ms of a cold start).
    from esl_sync.products import CHECKED_RAW, Product

    if storable is None:
        storable = json_text(raw)[1]
    # A raw item storable as it is goes in as it is: no copy, no second walk (CHECKED_RAW).
    kept = raw if storable and isinstance(raw, dict) else dict(raw)
    values: dict[str, Any] = {
        "source_system": "clover",
        "merchant_id": merchant_id,
        "source_id": fields.source_id,
        "source_variant_id": "",
        "name": fields.name,
        "barcode": fields.barcode,
        "sku": fields.sku,
        "price": fields.price,
        "cost": fields.cost,
        "currency": fields.currency,
        "price_type": fields.price_type,
        "unit": fields.unit,
        "status": fields.status,
        "extra_data": fields.extra_data,
        "raw": kept,
        "source_modified_time": fields.source_modified_time,
        "validation_error": fields.validation_error,
    }
    if kept is raw and fields.clean and _plain_text(merchant_id):
        # Half of an item's cost was Product's validation redoing what the rules did:
        # every value of a clean item already is what it would leave (see ItemFields),
        # and the raw item was found storable. An item with a problem, or whose raw item
        # or caller's text is not plain, is validated in full.
        # tests/unit/test_transform_fast_path.py checks the two agree on hostile items.
        return Product.model_construct(**values)
    return Product.model_validate(values, context={CHECKED_RAW: kept if kept is raw else None})


def _plain_text(text: str) -> bool:
    return text.isascii() and "\x00" not in text


def _item_id(raw: Mapping[str, Any]) -> str:
    item_id = raw.get("id")
    # Clover's ids are ASCII letters and digits: told without the regex, ≈ 0.08 µs less.
    if isinstance(item_id, str) and (
        (item_id.isalnum() and item_id.isascii() and len(item_id) <= 64)
        or ID_PATTERN.fullmatch(item_id)
    ):
        return item_id
    if item_id is None:
        got = "missing"
    elif isinstance(item_id, str):
        got = f"a string of {len(item_id)} characters"
    else:
        got = type(item_id).__name__
    raise InvalidItem(f"item has no usable 'id' (1 to 64 letters, digits, '_' or '-'); got {got}")


_NONE_BAD: frozenset[str] = frozenset()


def _validated(
    raw: Mapping[str, Any], item_id: str, problems: list[str]
) -> tuple[Mapping[str, Any], AbstractSet[str]]:
    """The fields of an item that is not plain as :class:`CloverItem` reads them
    (``itemGroup`` a dict), and the names of those of the wrong type (reported, left out).

    An item whose fields all have their exact types is its own reading, and never comes
    here (:func:`esl_sync.clover.item_types.plain_fields`, in :func:`item_fields`: no model
    built, ≈ 3 µs less an item); anything else is judged, and its problems named, by
    pydantic (read as a ``dict``: pydantic refuses any other mapping as a whole)."""
    # Imported here, not with the module: only an item that is not plain loads pydantic
    # (issue 15: the poll of clean items starts without it, ≈ 110 ms of a cold start).
    from pydantic import ValidationError

    from esl_sync.clover.items import CloverItem

    try:
        return CloverItem.model_validate(dict(raw)).model_dump(), set()
    except ValidationError as error:
        details = error.errors(include_url=False)
    problems.extend(_describe(detail) for detail in details)
    bad = {str(detail["loc"][0]) for detail in details if detail["loc"]}
    kept = {k: v for k, v in raw.items() if k not in bad}
    try:
        return CloverItem.model_validate(kept).model_dump(), bad
    except ValidationError:  # pragma: no cover - every failing field was left out
        return CloverItem(id=item_id).model_dump(), bad


def _describe(detail: ErrorDetails) -> str:
    field = ".".join(str(part) for part in detail["loc"]) or "item"
    message = detail["msg"]
    message = message[:1].lower() + message[1:]
    if detail["type"] == "missing":
        return f"{field} is missing"
    if detail["type"] == "string_pattern_mismatch":
        message = "not a Clover id"
    return f"{field}: {message} (got {type(detail['input']).__name__})"


def _amount(
    cents: int | None, field: str, problems: list[str]
) -> tuple[Decimal, str] | tuple[None, None]:
    """Cents as exact two-place dollars and their text, or (None, None) when absent or out
    of range (a problem named).

    The text is ``str`` of the Decimal, which is also what ``f"{dollars:.2f}"`` (the label),
    pydantic's JSON (the row) and ``extra_data["unit_cost"]`` write of it: made once, not
    four times. A store's amounts repeat (≈ 900 distinct in a 2,000-item catalog), so each
    is remembered (up to :data:`_AMOUNTS_KEPT`): ≈ 0.02 µs a lookup against 0.12 for the
    Decimal and 0.06 for its text. Measured in one process against the Decimal made and
    written where needed: item_fields ≈ 0.3 µs, the label ≈ 0.25 and the row ≈ 0.18 less an
    item (≈ 0.65 in all with nothing remembered yet; issue 15). Without remembering, the
    texts alone gained nothing. The same value either way (a Decimal is immutable), so the
    batch's threads may share it: whoever makes an entry makes the same one."""
    if cents is None:
        return _NO_AMOUNT
    if 0 <= cents <= MONEY_MAX_CENTS:  # the common case first
        amount = _AMOUNTS.get(cents)
        if amount is None:
            # cents_to_dollars, as a multiplication: the same Decimal (digits and exponent
            # -2; exact within the context's 28 digits), ≈ 0.15 µs less than scaleb.
            dollars = _CENT * cents
            amount = (dollars, str(dollars))
            if len(_AMOUNTS) >= _AMOUNTS_KEPT:  # all the amounts of other stores: anew
                _AMOUNTS.clear()
            _AMOUNTS[cents] = amount
        return amount
    if cents < 0:
        problems.append(f"{field} must not be negative")
    else:
        problems.append(f"{field} is out of range ({_size(cents)}, at most {MONEY_MAX_CENTS})")
    return _NO_AMOUNT


_CENT = Decimal("0.01")
_NO_AMOUNT = (None, None)
_AMOUNTS: dict[int, tuple[Decimal, str]] = {}
_AMOUNTS_KEPT = 4096
"""Amounts :func:`_amount` remembers (≈ 1 MB), more than a store's distinct prices and
costs (≈ 900 in a 2,000-item catalog); when full it starts anew."""


def _time(ms: int | None, field: str, problems: list[str]) -> int | None:
    if ms is None or 0 <= ms <= BIGINT_MAX:
        return ms
    problems.append(f"{field} is out of range ({_size(ms)}, 0 to {BIGINT_MAX})")
    return None


def _size(number: int) -> str:
    """A number for a message: itself when short, else its sign and about how long it is
    (Python refuses to print integers of over 4,300 digits)."""
    if number.bit_length() < 128:
        return str(number)
    digits = int(number.bit_length() * math.log10(2)) + 1
    return f"{'minus ' if number < 0 else ''}a number of about {digits} digits"


def _product_code(
    item: Mapping[str, Any],
    raw: Mapping[str, Any],
    fields: Sequence[str],
    bad: AbstractSet[str],
    problems: list[str],
) -> str | None:
    """The first non-blank of ``fields``, if Hipoink can take it; else None and a problem.

    A code that is there but unusable is refused, not skipped: the next field would move
    the product to another label without anyone noticing.
    """
    for field in fields:
        value = item.get(field) if field in READ_FIELDS else raw.get(field)
        if field in bad:
            return None  # its type is already named
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{field}: not text (got {type(value).__name__})")
            return None
        code, problem = product_code(value)
        if not code:
            continue
        if problem:
            problems.append(f"{field} is not a usable product code: {problem}")
            return None
        return code
    problems.append(f"no product code ({', '.join(fields)} all empty)")
    return None


def _optional_text(value: str | None, max_length: int) -> str | None:
    return (label_text(value, max_length) or None) if value is not None else None


def _named(item_id: str, problems: list[str]) -> str:
    """The refusal of an item with ``problems`` (the caller calls only with some)."""
    text = f"item {item_id}: {'; '.join(problems)}"
    if len(text) > VALIDATION_ERROR_MAX_CHARS:
        text = text[: VALIDATION_ERROR_MAX_CHARS - 1] + "…"
    return text
