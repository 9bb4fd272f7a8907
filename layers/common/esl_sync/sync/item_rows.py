"""A raw Clover item → the row the page's statement writes and the label it shows, once.

A first sync or a bulk edit writes thousands of items a poll, so this is the poll's hot path
(issue 15: about 25 µs of CPU an item for everything a poll does). Per item it does what it
must and nothing twice: the rules (:func:`esl_sync.clover.transform.item_fields`: one read
of the item, the same refusals and cleaning as ever), the label record and its hash, and
the row's JSON, written once; the raw item's JSON is the poll's one serialization of it
(:func:`esl_sync.storable.json_text`), spliced in as it is.

A *clean* item (no problem found, its raw item storable as it is: nearly every item) is
written without a model: its fields already are what a ``Product``'s validation would leave
(see :class:`~esl_sync.clover.transform.ItemFields`). Any other item (refused, or with text
or JSON to clean) takes the long way through :class:`~esl_sync.products.Product`, whose
validation cleans it. ``tests/unit/test_item_rows.py`` checks that both ways write the same
row and label for hostile items.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

import orjson

from esl_sync.clover.transform import ItemFields, item_fields, product_of
from esl_sync.records import Item, ProductRow
from esl_sync.settings import Settings
from esl_sync.sync.labels import LabelTarget, label_target

if TYPE_CHECKING:  # a clean item is written without a model: the poll loads no pydantic
    from esl_sync.products import Product


_new_tuple = tuple.__new__


class ItemRow(NamedTuple):
    """One item as the poll writes it: the row, the label it should show, and the refusal
    of Clover's version (``validation_error``) or None (a tuple: one per item)."""

    row: ProductRow
    target: LabelTarget
    refusal: str | None


def item_row(
    raw: Item,
    *,
    text: str | None,
    storable: bool,
    key: str | None,
    merchant_id: str,
    settings: Settings,
) -> ItemRow:
    """The row and label of ``raw``; ``text``, ``storable``: what
    :func:`esl_sync.storable.json_text` made of it; ``key``: its raw key
    (:func:`esl_sync.sync.raw_keys.raw_key`), None without text. Raises
    :class:`~esl_sync.clover.transform.InvalidItem` for an item without a usable id."""
    fields = item_fields(raw, code_fields=settings.clover_product_code_fields)
    if fields.clean and storable and text is not None and key is not None:
        target = label_target(fields, settings)
        content_hash = f"{key}:{target.label_hash or '-'}"
        row_json = fields_json(fields, content_hash, target.label_hash, text)
        # Tuples made directly, not through the classes' generated ``__new__``: ≈ 0.2 µs
        # less an item (issue 15).
        row = _new_tuple(ProductRow, ((fields.source_id, ""), target.label_hash, row_json))
        return _new_tuple(ItemRow, (row, target, None))
    product = product_of(fields, raw, merchant_id=merchant_id, storable=storable)
    target = label_target(product, settings)
    row = product_row(product, target.label_hash, key, text if storable else None)
    return ItemRow(row, target, product.validation_error)


def fields_json(fields: ItemFields, content_hash: str, label_hash: str | None, raw: str) -> str:
    """The statement's row of a clean item: its columns, hashes, and ``raw`` (its JSON text,
    embedded as it is).

    orjson, not ``json``: a row costs about 0.4 µs instead of 4 (measured here; a 2,000-item
    first sync writes 2,000 rows), and ``orjson.Fragment`` embeds the raw item's text without
    parsing it again. The values are exactly what it writes as ``json`` would (text without
    lone surrogates: a clean item has none; integers within 64 bits: every number here is
    within ``bigint``), and Postgres reads both the same. The columns' names are those the
    statement reads (``jsonb_to_recordset`` in :mod:`esl_sync.store.postgres`);
    ``tests/unit/test_item_rows.py`` checks the row reads back as the long way's."""
    # The fields unpacked at once: ≈ 0.3 µs less a row than reading 16 attributes (issue
    # 15). Money as pydantic writes a Decimal (its text: ``"3.49"``), which Postgres reads
    # exactly: the texts the transform made once (ItemFields.price_text, cost_text).
    (source_id, name, barcode, sku, _, _, currency, price_type, unit, status,
     extra_data, modified, validation_error, _, price, cost) = fields  # fmt: skip
    row: dict[str, object] = {
        "source_system": "clover",
        "source_id": source_id,
        "source_variant_id": "",
        "name": name,
        "barcode": barcode,
        "sku": sku,
        "price": price,
        "cost": cost,
        "currency": currency,
        "price_type": price_type,
        "unit": unit,
        "status": status,
        "extra_data": extra_data,
        "source_modified_time": modified,
        "validation_error": validation_error,
    }
    # Fifteen columns in the display, the last three set after it (the same keys, in the
    # same order): CPython builds a display of up to 15 constant keys at once, presized
    # (BUILD_CONST_KEY_MAP), a longer one entry by entry, growing: ≈ 0.15 µs less a row.
    row["content_hash"] = content_hash
    row["label_hash"] = label_hash
    row["raw"] = orjson.Fragment(raw)
    return orjson.dumps(row).decode()


def product_row(
    product: Product,
    label_hash: str | None,
    raw_key: str | None = None,
    raw_json: str | None = None,
) -> ProductRow:
    """The row of a ``Product`` (the long way): its fields as pydantic writes them, its
    hashes, and its raw item as ``raw_json`` (the text the poll made of it) when the product
    holds it as it is, else as the product holds it (cleaned).

    ``content_hash``: what the row is made of, then its label's hash: the raw item's key
    under its mapping (:mod:`esl_sync.sync.raw_keys`), or, for a row made otherwise, a
    digest of every stored field."""
    made_of = raw_key if raw_key is not None else product.content_hash
    content_hash = f"{made_of}:{label_hash or '-'}"
    fields = product.model_dump_json(exclude={"merchant_id", "raw"})
    raw = raw_json if raw_json is not None else json.dumps(product.raw)
    hashes = f'"content_hash":{json.dumps(content_hash)},"label_hash":{json.dumps(label_hash)}'
    row_json = f'{fields[:-1]},{hashes},"raw":{raw}}}'
    return ProductRow(product.key, label_hash, row_json)
