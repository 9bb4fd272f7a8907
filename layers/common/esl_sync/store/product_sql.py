"""The product writer's statements (:class:`esl_sync.store.postgres.PostgresProductWriter`):
one per page of a poll, and the removal of products Clover no longer lists; each checks the
poll's fence when it writes a row (migration 0009), before it locks any product row."""

from esl_sync.store.label_owners import FENCE_HOLDS


def _fence(name: str, when: str) -> str:
    """A CTE that checks the writer's fence and records it on the merchant's
    ``label_clocks`` row (locked until the transaction ends) when ``when`` holds; it
    returns a row unless the fence refused it."""
    return f"""{name} AS (
    INSERT INTO label_clocks AS c (merchant_id, version, fence_epoch, fence_generation)
    SELECT %(merchant_id)s, nextval('label_versions'), %(epoch)s::text, %(generation)s::bigint
    WHERE %(epoch)s::text IS NOT NULL AND {when}
    ON CONFLICT (merchant_id) DO UPDATE
        SET fence_epoch = EXCLUDED.fence_epoch, fence_generation = EXCLUDED.fence_generation
    WHERE {FENCE_HOLDS}
    RETURNING 1
)"""  # noqa: S608 - FENCE_HOLDS is a constant


# The fence of a statement whose CTE ``changing`` (read, no lock) says which rows it will
# write, and whose ``written`` writes them only ``WHERE NOT (SELECT refused FROM gate)``:
# the fence is taken first (``fence_before``), so a statement never holds a product row
# while it waits for the clock's row. (Taken after the product rows, two polls whose pages
# cross deadlocked: the newer, holding a row of its page, waited for the older's clock;
# the older, for that row; Postgres ended the newer, which had waited first, and the older
# committed its older version.) A row ``changing`` did not foresee (another transaction
# changed it meanwhile) is fenced after the write (``fence_after``). A statement that
# writes nothing takes no lock on the clock: an idle poll writes no clock.
FENCE_BEFORE = _fence("fence_before", "EXISTS (SELECT FROM changing)")
GATE = """gate AS (
    SELECT %(epoch)s::text IS NOT NULL AND EXISTS (SELECT FROM changing)
        AND NOT EXISTS (SELECT FROM fence_before) AS refused
)"""
FENCE_AFTER = _fence(
    "fence_after", "NOT EXISTS (SELECT FROM changing) AND EXISTS (SELECT FROM written)"
)
FENCE_REFUSED = """(SELECT refused FROM gate) OR (%(epoch)s::text IS NOT NULL
    AND NOT EXISTS (SELECT FROM changing) AND NOT EXISTS (SELECT FROM fence_after))"""
"""Whether the fence refused the statement (its last column; the caller raises, and the
transaction rolls back). Refused before the write, the statement returns one row of NULLs
saying so."""


# One statement per page. A refused item (validation_error set) changes no label: if its
# row exists, the row keeps every label field of the version before (name, code, prices,
# status, label_hash, …) and takes only the new raw item, validation_error and content
# hash; updated_at (the stale labels' "since") stays, refused_at says since when. Every
# value arrives storable (esl_sync.products, esl_sync.sync.item_rows), so no item can make
# Postgres refuse the page. One exception, for rows older code wrote: a kept version with
# no price that is not VARIABLE was labelled $0.00, which no version shows now (the
# transform refuses it): its label is dropped (label_hash NULL, returned as
# label_dropped), so the poll takes that label off instead of keeping $0.00 up.
UPSERT = f"""
WITH incoming AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS r(
        source_system text, source_id text, source_variant_id text, name text, barcode text,
        sku text, price numeric, cost numeric, currency text, price_type text, unit text,
        status text, extra_data jsonb, raw jsonb, source_modified_time bigint,
        validation_error text, content_hash text, label_hash text)
),
previous AS (
    SELECT p.source_system, p.source_id, p.source_variant_id, p.name, p.barcode, p.sku,
        p.price, p.cost, p.currency, p.price_type, p.unit, p.status, p.extra_data,
        p.source_modified_time, p.label_hash, p.content_hash
    FROM products p JOIN incoming i USING (source_system, source_id, source_variant_id)
    WHERE p.merchant_id = %(merchant_id)s
),
chosen AS (
    SELECT i.* FROM incoming i LEFT JOIN previous v
        USING (source_system, source_id, source_variant_id)
    WHERE i.validation_error IS NULL OR v.source_id IS NULL
    UNION ALL
    SELECT i.source_system, i.source_id, i.source_variant_id, v.name, v.barcode, v.sku,
        v.price, v.cost, v.currency, v.price_type, v.unit, v.status, v.extra_data, i.raw,
        v.source_modified_time, i.validation_error, i.content_hash,
        CASE WHEN v.price IS NOT NULL OR v.price_type = 'VARIABLE' THEN v.label_hash END
    FROM incoming i JOIN previous v USING (source_system, source_id, source_variant_id)
    WHERE i.validation_error IS NOT NULL
),
changing AS (
    SELECT FROM chosen i LEFT JOIN previous v USING (source_system, source_id, source_variant_id)
    WHERE v.content_hash IS DISTINCT FROM i.content_hash
), {FENCE_BEFORE}, {GATE},
written AS (
    INSERT INTO products AS p (
        source_system, merchant_id, source_id, source_variant_id, name, barcode, sku, price,
        cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash, deleted_at, refused_at)
    SELECT source_system, %(merchant_id)s, source_id, source_variant_id, name, barcode, sku,
        price, cost, currency, price_type, unit, status, extra_data, raw, source_modified_time,
        validation_error, content_hash, label_hash,
        CASE WHEN status = 'deleted' THEN now() END,
        CASE WHEN validation_error IS NOT NULL THEN now() END
    FROM chosen WHERE NOT (SELECT refused FROM gate)
    ON CONFLICT (source_system, merchant_id, source_id, source_variant_id) DO UPDATE SET
        name = EXCLUDED.name, barcode = EXCLUDED.barcode, sku = EXCLUDED.sku,
        price = EXCLUDED.price, cost = EXCLUDED.cost, currency = EXCLUDED.currency,
        price_type = EXCLUDED.price_type, unit = EXCLUDED.unit, status = EXCLUDED.status,
        extra_data = EXCLUDED.extra_data, raw = EXCLUDED.raw,
        source_modified_time = EXCLUDED.source_modified_time,
        validation_error = EXCLUDED.validation_error, content_hash = EXCLUDED.content_hash,
        label_hash = EXCLUDED.label_hash,
        updated_at = CASE WHEN EXCLUDED.validation_error IS NULL THEN now() ELSE p.updated_at END,
        refused_at = CASE WHEN EXCLUDED.validation_error IS NOT NULL
                          THEN coalesce(p.refused_at, now()) END,
        deleted_at = CASE WHEN EXCLUDED.status = 'deleted'
                          THEN coalesce(p.deleted_at, now()) END
    WHERE p.content_hash IS DISTINCT FROM EXCLUDED.content_hash
    RETURNING p.source_system, p.source_id, p.source_variant_id, p.label_hash,
        p.validation_error
), {FENCE_AFTER}
SELECT w.source_id, w.source_variant_id, prev.source_id IS NOT NULL AS existed,
       prev.barcode, prev.label_hash,
       w.validation_error IS NOT NULL AND w.label_hash IS NULL
           AND prev.label_hash IS NOT NULL AS label_dropped, {FENCE_REFUSED}
FROM written w LEFT JOIN previous prev USING (source_system, source_id, source_variant_id)
UNION ALL
SELECT NULL::text, NULL::text, NULL::boolean, NULL::text, NULL::text, NULL::boolean, true
FROM gate WHERE refused
"""  # noqa: S608 - the fence's constants

MARK_DELETED = f"""
WITH listed AS (
    SELECT FROM products
    WHERE merchant_id = %(merchant_id)s AND status = 'active'
      AND (source_id, source_variant_id) IN (
          SELECT * FROM jsonb_to_recordset(%(keys)s::jsonb) AS k(sid text, vid text))
), changing AS (SELECT FROM listed), {FENCE_BEFORE}, {GATE},
target AS (
    SELECT source_system, source_id, source_variant_id, barcode, label_hash
    FROM products
    WHERE merchant_id = %(merchant_id)s AND status = 'active'
      AND (source_id, source_variant_id) IN (
          SELECT * FROM jsonb_to_recordset(%(keys)s::jsonb) AS k(sid text, vid text))
      AND NOT (SELECT refused FROM gate)
    FOR UPDATE
), written AS (
UPDATE products p SET status = 'deleted', deleted_at = now(), updated_at = now(),
    label_hash = NULL, content_hash = 'removed:' || p.content_hash,
    validation_error = NULL, refused_at = NULL,
    extra_data = p.extra_data || '{{"removed_because": "not listed by Clover (404)"}}'
FROM target t
WHERE p.merchant_id = %(merchant_id)s AND p.source_system = t.source_system
  AND p.source_id = t.source_id AND p.source_variant_id = t.source_variant_id
RETURNING t.source_id, t.source_variant_id, t.barcode, t.label_hash
), {FENCE_AFTER}
SELECT w.*, {FENCE_REFUSED} FROM written w
UNION ALL
SELECT NULL::text, NULL::text, NULL::text, NULL::text, true FROM gate WHERE refused
"""  # noqa: S608 - the fence's constants
