"""Product → Hipoink product record, and the hash of what a label shows."""

from __future__ import annotations

from esl_sync.products import Product, stable_hash

HipoinkRecord = dict[str, str]


def to_record(product: Product) -> HipoinkRecord | None:
    """The full record a label needs, or None when the product must not be on a label.

    Every upsert sends the full record: whether Hipoink keeps omitted fields is unconfirmed.
    """
    if not product.labelable or product.barcode is None:
        return None
    record: HipoinkRecord = {
        "pc": product.barcode,
        "pn": product.name,
        "pp": f"{product.price or 0:.2f}",
        "pi": product.source_id,
    }
    if product.price_type == "PER_UNIT" and product.unit:
        record["pu"] = product.unit
    return record


def label_hash(record: HipoinkRecord | None) -> str | None:
    """Digest of exactly what the label shows; None when there is no label."""
    return None if record is None else stable_hash(record)
