"""Which product each code's label shows, read back from Postgres with the label clock.

The rule that picks one product per code lives in SQL (the ``label_owner`` function of
migration 0004); the product writer (:mod:`esl_sync.store.postgres`) asks it inside the
poll's transaction, and the label ledger (:mod:`esl_sync.store.label_ledger`) reads the
same columns and advances the same clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from psycopg.rows import dict_row

from esl_sync.records import Fence, FenceRefused, LabelOwner, LabelOwners

if TYPE_CHECKING:
    import psycopg

    from esl_sync.products import Product

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
FENCE_HOLDS = """(c.fence_epoch IS DISTINCT FROM EXCLUDED.fence_epoch
    OR c.fence_generation IS NULL OR c.fence_generation <= EXCLUDED.fence_generation)"""
"""The poll fence (migration 0009) on ``label_clocks c``: the writer's token (``EXCLUDED``)
is refused only by a later generation of the same epoch."""
ADVANCE_CLOCK = f"""
INSERT INTO label_clocks AS c (merchant_id, version, fence_epoch, fence_generation)
VALUES (%(m)s, nextval('label_versions'), %(epoch)s::text, %(generation)s::bigint)
ON CONFLICT (merchant_id) DO UPDATE SET version = nextval('label_versions'),
    fence_epoch = coalesce(EXCLUDED.fence_epoch, c.fence_epoch),
    fence_generation = CASE WHEN EXCLUDED.fence_epoch IS NULL THEN c.fence_generation
                            ELSE EXCLUDED.fence_generation END
WHERE EXCLUDED.fence_epoch IS NULL OR {FENCE_HOLDS}
RETURNING version
"""  # noqa: S608 - FENCE_HOLDS is a constant
"""The merchant's label clock, advanced under the writer's fence (``epoch``, ``generation``:
both NULL without one); no row when the fence refuses it. The new value is drawn once the
row is locked (``DO UPDATE``), so of two racing writers the one that commits last also
holds the larger version."""


def fence_params(fence: Fence | None) -> dict[str, object]:
    """The statement parameters of a fence (NULL: none)."""
    return {
        "epoch": None if fence is None else fence.epoch,
        "generation": None if fence is None else fence.generation,
    }


def refused(conn: psycopg.Connection[Any], merchant_id: str, fence: Fence | None) -> FenceRefused:
    """The refusal of a write under ``fence``, naming the lost lease and both generations:
    the one Postgres saw (read once refused, in the refused transaction) and the poll's. A
    poll that keeps being refused against the same stored generation, its own climbing
    towards it, is a state table that went back (a restore): ``esl-sync fence catch-up``."""
    row = conn.execute(
        "SELECT fence_generation FROM label_clocks WHERE merchant_id = %s", (merchant_id,)
    ).fetchone()
    saw = "-" if row is None or row[0] is None else row[0]
    generation = fence.generation if fence else "-"
    return FenceRefused(
        f"merchant {merchant_id}: poll lease lost: Postgres saw generation {saw} of this epoch,"
        f" this poll's is {generation}; this poll's write is rolled back (a newer poll wrote;"
        f" or, refused poll after poll, the state table went back: esl-sync fence catch-up)"
    )


# The clock advanced, then the owner of each code (as this transaction sees the products):
# its key only; its label fields are read when asked for (a poll that wrote the owner has
# its record already, so a first sync of 2,000 items reads no product back).
_LABEL_OWNERS = f"""
WITH clock AS ({ADVANCE_CLOCK})
SELECT clock.version, o.*
FROM clock LEFT JOIN (
    SELECT code.pc, owner.source_system, owner.source_id, owner.source_variant_id,
           (SELECT count(*) FROM products c WHERE c.merchant_id = %(m)s AND c.barcode = code.pc
              AND c.label_hash IS NOT NULL) AS claims
    FROM jsonb_array_elements_text(%(pcs)s::jsonb) AS code (pc)
    CROSS JOIN LATERAL label_owner(%(m)s, code.pc) owner
) o ON true
"""  # noqa: S608 - ADVANCE_CLOCK is a constant
_PRODUCT = f"""
SELECT {PRODUCT_SELECT} FROM products p
WHERE p.merchant_id = %s AND p.source_system = %s AND p.source_id = %s
  AND p.source_variant_id = %s
"""  # noqa: S608 - the interpolated names are the constant column list above


def product_of(row: dict[str, Any]) -> Product:
    # Imported here, not with the module: a poll builds a product from its row only for an
    # owner it did not write (or the heal, for a stale label), so an ordinary poll loads
    # no pydantic (issue 15: ≈ 110 ms of a cold start).
    from esl_sync.products import Product

    return Product(**{column: row[column] for column in PRODUCT_COLUMNS})


def label_owners(
    conn: psycopg.Connection[Any], merchant_id: str, pcs: Iterable[str], fence: Fence | None
) -> LabelOwners:
    """See :meth:`esl_sync.ports.ProductWriter.label_owners`; FenceRefused when ``fence``
    is older than one written (the caller's transaction then rolls back)."""
    # The codes as one JSON text: psycopg writes a list of 2,000 as an array in Python, about
    # 15 times as long as json's encoder takes (a first sync touches every code).
    codes = json.dumps(sorted(set(pcs)))
    params = {"m": merchant_id, "pcs": codes, **fence_params(fence)}
    rows = conn.execute(_LABEL_OWNERS, params).fetchall()
    if not rows:  # the clock's row was not written: the fence refused it
        raise refused(conn, merchant_id, fence)
    # One reader per source system (one, nearly always), shared by its owners: a first
    # sync holds an owner per code until its jobs are sent.
    readers: dict[str, Callable[[tuple[str, str]], Product]] = {}
    owners = {}
    for _, pc, system, source_id, variant_id, claims in rows:
        if pc is None:
            continue
        read = readers.get(system)
        if read is None:
            read = readers[system] = partial(_read_product, conn, merchant_id, system)
        owners[pc] = LabelOwner((source_id, variant_id), merchant_id, int(claims), read)
    return LabelOwners(version=int(rows[0][0]), owners=owners)


def _read_product(
    conn: psycopg.Connection[Any], merchant_id: str, system: str, key: tuple[str, str]
) -> Product:
    """An owner's label fields, read in the transaction that asked who owns its code."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_PRODUCT, (merchant_id, system, *key)).fetchone()
    assert row is not None  # the owner's row, in this very transaction
    return product_of(row)
