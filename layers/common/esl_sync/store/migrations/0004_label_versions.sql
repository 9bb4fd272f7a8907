-- Label versions, retries after an outage, and product codes two products claim.

-- Every label decision (a poll's label jobs, a heal) carries a version of its merchant's
-- label clock; the sender never lets an older version replace a newer one on the shelf.
-- A Clover modifiedTime cannot do this: it belongs to an item, not to a product code (a
-- code moves between items, a 404 deletion has none, a heal or a settings change makes a
-- new record without one). The clock is one sequence for every merchant (so its values
-- never repeat, even after a rolled-back transaction) and the merchant's last value:
--   * a poll advances it inside its own transaction, after its product writes;
--   * a heal run inside a poll (which holds the merchant's lease: no other writer) advances it;
--   * a heal run from the command line (no lease) uses the committed value, so a poll
--     committing meanwhile always outranks it.
CREATE SEQUENCE label_versions AS bigint;
CREATE TABLE label_clocks (
    merchant_id  text PRIMARY KEY REFERENCES merchants (merchant_id),
    version      bigint NOT NULL
);

-- version: the version of the label Hipoink acknowledged (NULL: acknowledged before
-- versions existed, older than any version). requeued_at: when a heal last queued the
-- label again, so the next poll does not queue it twice while that job is in flight.
ALTER TABLE label_state ADD COLUMN version bigint, ADD COLUMN requeued_at timestamptz;
-- The merchant lookup of every poll counts the labels whose delivery failed (its cue to
-- retry them): an index that is empty for a healthy store keeps that count free.
CREATE INDEX label_state_failing ON label_state (merchant_id)
    WHERE failure_class IN ('retryable', 'configuration');

-- Which product a code's label shows. Products with a label (label_hash set: active, with
-- a code, an accepted version, kept while a newer one is refused) claim their code; when several claim one code, the product stored
-- first wins (then the smallest Clover id, byte order): a duplicate created later never takes a label
-- over, and the winner cannot change while both stay, so the label never flips. Every
-- query that needs the rule calls this function (it is inlined into each).
CREATE FUNCTION label_owner(merchant text, code text)
RETURNS TABLE (source_system text, source_id text, source_variant_id text)
LANGUAGE sql STABLE AS $$
    SELECT q.source_system, q.source_id, q.source_variant_id FROM products q
    WHERE q.merchant_id = merchant AND q.barcode = code AND q.label_hash IS NOT NULL
    ORDER BY q.created_at, q.source_id COLLATE "C", q.source_variant_id COLLATE "C"
    LIMIT 1
$$;

-- Codes claimed by more than one product, one row per claiming product (for `status`).
CREATE VIEW label_conflicts AS
SELECT p.merchant_id, p.barcode AS pc, p.source_id, p.source_variant_id, p.name,
       (p.source_id, p.source_variant_id) = (o.source_id, o.source_variant_id) AS shown,
       d.claims, o.source_id AS shown_source_id
FROM (SELECT merchant_id, barcode, count(*) AS claims FROM products
      WHERE label_hash IS NOT NULL GROUP BY merchant_id, barcode HAVING count(*) > 1) d
JOIN products p ON p.merchant_id = d.merchant_id AND p.barcode = d.barcode
     AND p.label_hash IS NOT NULL
CROSS JOIN LATERAL label_owner(d.merchant_id, d.barcode) o;

-- Stale labels, as before, but an upsert is due only for the product the label shows: the
-- other claimants of a code never count as stale, so the count settles. (The owner is
-- looked up by l.pc where there is one, which is the same code: it makes the planner test
-- ownership only for labels whose hash already differs, keeping the fleet-wide count as
-- cheap as before.)
CREATE OR REPLACE VIEW stale_labels AS
SELECT p.merchant_id, p.barcode AS pc, 'upsert'::text AS action,
       p.source_system, p.source_id, p.source_variant_id, p.name,
       p.updated_at AS since, l.failure_class, l.failure_message, l.failed_at
FROM products p
LEFT JOIN label_state l ON l.merchant_id = p.merchant_id AND l.pc = p.barcode
WHERE p.label_hash IS NOT NULL AND l.label_hash IS DISTINCT FROM p.label_hash
  AND EXISTS (SELECT FROM label_owner(p.merchant_id, coalesce(l.pc, p.barcode)) o
              WHERE o.source_id = p.source_id AND o.source_variant_id = p.source_variant_id
                AND o.source_system = p.source_system)
UNION ALL
SELECT l.merchant_id, l.pc, 'delete'::text, NULL, NULL, NULL, NULL,
       l.acknowledged_at, l.failure_class, l.failure_message, l.failed_at
FROM label_state l
WHERE l.label_hash IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM products p
                  WHERE p.merchant_id = l.merchant_id AND p.barcode = l.pc
                    AND p.label_hash IS NOT NULL);
