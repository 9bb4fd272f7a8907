-- Stores Hipoink refused for their configuration (wrong sign, unknown client id or store
-- code). Their label jobs make no Hipoink call until retry_after, when one job re-tests the
-- store; the operator lifts a block with `esl-sync stores unblock MERCHANT`.
CREATE TABLE store_blocks (
    merchant_id  text PRIMARY KEY REFERENCES merchants (merchant_id),
    store_code   text NOT NULL,
    reason       text NOT NULL,
    blocked_at   timestamptz NOT NULL DEFAULT now(),
    retry_after  timestamptz NOT NULL
);

-- Labels that do not show what the product table says, one row per fix:
--   upsert: a product's label hash differs from what Hipoink acknowledged for its code
--           (since: when the product last changed);
--   delete: Hipoink holds a code that no product wants any more
--           (since: when Hipoink last acknowledged it).
-- With the code's last failure. The status command, its count and the self-healing pass
-- all read this one definition.
CREATE VIEW stale_labels AS
SELECT p.merchant_id, p.barcode AS pc, 'upsert'::text AS action,
       p.source_system, p.source_id, p.source_variant_id, p.name,
       p.updated_at AS since, l.failure_class, l.failure_message, l.failed_at
FROM products p
LEFT JOIN label_state l ON l.merchant_id = p.merchant_id AND l.pc = p.barcode
WHERE p.label_hash IS NOT NULL AND l.label_hash IS DISTINCT FROM p.label_hash
UNION ALL
SELECT l.merchant_id, l.pc, 'delete'::text, NULL, NULL, NULL, NULL,
       l.acknowledged_at, l.failure_class, l.failure_message, l.failed_at
FROM label_state l
WHERE l.label_hash IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM products p
                  WHERE p.merchant_id = l.merchant_id AND p.barcode = l.pc
                    AND p.label_hash IS NOT NULL);
