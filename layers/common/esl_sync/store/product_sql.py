"""The product writer's statements (:class:`esl_sync.store.postgres.PostgresProductWriter`):
one per page of a poll, and the removal of products Clover no longer lists; each checks the
poll's fence when it writes a row (:data:`FENCED_WRITE`, migration 0009)."""

from esl_sync.store.label_owners import FENCE_HOLDS

FENCED_WRITE = f"""fenced AS (
    INSERT INTO label_clocks AS c (merchant_id, version, fence_epoch, fence_generation)
    SELECT %(merchant_id)s, nextval('label_versions'), %(epoch)s::text, %(generation)s::bigint
    WHERE %(epoch)s::text IS NOT NULL AND EXISTS (SELECT FROM written)
    ON CONFLICT (merchant_id) DO UPDATE
        SET fence_epoch = EXCLUDED.fence_epoch, fence_generation = EXCLUDED.fence_generation
    WHERE {FENCE_HOLDS}
    RETURNING 1
)"""  # noqa: S608 - FENCE_HOLDS is a constant
"""A CTE for a statement whose CTE ``written`` returns the product rows it wrote: when it
wrote any, the writer's fence is checked and recorded on the merchant's ``label_clocks``
row (locked until the transaction ends), so a poll that writes products but changes no
label is fenced too, in the same round trip. :data:`FENCE_REFUSED` says whether it was
refused (then the caller raises, and the transaction rolls back)."""
FENCE_REFUSED = "%(epoch)s::text IS NOT NULL AND NOT EXISTS (SELECT FROM fenced)"


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
        p.source_modified_time, p.label_hash
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
    FROM chosen
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
), {FENCED_WRITE}
SELECT w.source_id, w.source_variant_id, prev.source_id IS NOT NULL AS existed,
       prev.barcode, prev.label_hash,
       w.validation_error IS NOT NULL AND w.label_hash IS NULL
           AND prev.label_hash IS NOT NULL AS label_dropped, {FENCE_REFUSED}
FROM written w LEFT JOIN previous prev USING (source_system, source_id, source_variant_id)
"""  # noqa: S608 - the fence's constants

MARK_DELETED = f"""
WITH target AS (
    SELECT source_system, source_id, source_variant_id, barcode, label_hash
    FROM products
    WHERE merchant_id = %(merchant_id)s AND status = 'active'
      AND (source_id, source_variant_id) IN (
          SELECT * FROM jsonb_to_recordset(%(keys)s::jsonb) AS k(sid text, vid text))
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
), {FENCED_WRITE}
SELECT w.*, {FENCE_REFUSED} FROM written w
"""  # noqa: S608 - the fence's constants
