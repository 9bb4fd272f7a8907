-- Items whose current Clover version was refused (products.validation_error names why):
-- since when. A refused item's row keeps the label fields (and label_hash) of its last
-- accepted version, so its label stays as it was until the item is fixed in Clover;
-- `esl-sync status --labels MERCHANT` lists these items next to the stale labels.
ALTER TABLE products ADD COLUMN refused_at timestamptz;

-- A removed (hidden, deleted) item is never refused: its removal is what the shelf needs.
UPDATE products SET validation_error = NULL WHERE status = 'deleted';
UPDATE products SET refused_at = updated_at WHERE validation_error IS NOT NULL;

CREATE INDEX products_refused ON products (merchant_id) WHERE validation_error IS NOT NULL;
