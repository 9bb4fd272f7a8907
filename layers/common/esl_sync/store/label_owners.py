"""Which product each code's label shows, read back from Postgres with the label clock.

The rule that picks one product per code lives in SQL (the ``label_owner`` function of
migration 0004); the product writer (:mod:`esl_sync.store.postgres`) asks it inside the
poll's transaction, and the label ledger (:mod:`esl_sync.store.label_ledger`) reads the
same columns and advances the same clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from esl_sync.products import Product
from esl_sync.records import LabelOwner, LabelOwners

if TYPE_CHECKING:
    import psycopg

PRODUCT_COLUMNS = (
    "source_system",
    "merchant_id",
    "source_id",
    "source_variant_id",
    "name",
    "barcode",
    "sku",
    "price",
    "cost",
    "currency",
    "price_type",
    "unit",
    "status",
    "extra_data",
    "source_modified_time",
)
"""The label fields of a product row. ``validation_error`` is left out: a row with a label
holds an accepted version in these fields even while Clover's newest one is refused (see
the upsert in :mod:`esl_sync.store.postgres`), and that version is what its label shows."""
PRODUCT_SELECT = ", ".join(f"p.{c}" for c in PRODUCT_COLUMNS)
ADVANCE_CLOCK = """
INSERT INTO label_clocks (merchant_id, version) VALUES (%(m)s, nextval('label_versions'))
ON CONFLICT (merchant_id) DO UPDATE SET version = EXCLUDED.version
RETURNING version
"""


# The clock advanced, then the owner of each code (as this transaction sees the products).
_LABEL_OWNERS = f"""
WITH clock AS ({ADVANCE_CLOCK})
SELECT clock.version, o.*
FROM clock LEFT JOIN (
    SELECT code.pc, {PRODUCT_SELECT},
           (SELECT count(*) FROM products c WHERE c.merchant_id = %(m)s AND c.barcode = code.pc
              AND c.label_hash IS NOT NULL) AS claims
    FROM unnest(%(pcs)s::text[]) AS code (pc)
    CROSS JOIN LATERAL label_owner(%(m)s, code.pc) owner
    JOIN products p ON p.merchant_id = %(m)s AND p.source_system = owner.source_system
         AND p.source_id = owner.source_id AND p.source_variant_id = owner.source_variant_id
) o ON true
"""  # noqa: S608 - the interpolated names are the constant column list above


def product_of(row: dict[str, Any]) -> Product:
    return Product(**{column: row[column] for column in PRODUCT_COLUMNS})


def label_owners(
    conn: psycopg.Connection[Any], merchant_id: str, pcs: Iterable[str]
) -> LabelOwners:
    """See :meth:`esl_sync.ports.ProductWriter.label_owners`."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LABEL_OWNERS, {"m": merchant_id, "pcs": sorted(set(pcs))})
        rows = cur.fetchall()
    return LabelOwners(
        version=int(rows[0]["version"]),
        owners={
            row["pc"]: LabelOwner(product_of(row), int(row["claims"]))
            for row in rows
            if row["pc"] is not None
        },
    )
