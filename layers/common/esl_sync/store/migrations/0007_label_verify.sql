-- Verifying labels against what Hipoink holds (esl_sync.sync.verify).
--
-- label_state records what Hipoink acknowledged; a call that timed out on our side and
-- landed late, an edit in Hipoink's console or a restore from backup make Hipoink hold
-- otherwise, and nothing counted the label stale. A verify compares the two; a label that
-- differs is marked: its acknowledged hash is replaced by one no record has (so the
-- stale_labels view lists it, its version kept) and its failure class is 'drift'. The
-- poll's merchant lookup counts the labels failing with a class a re-send can cure, from a
-- partial index: 'drift' is one now, so the index takes it too (an old poller's count of
-- the other two classes still uses it: its predicate implies this one).
CREATE INDEX label_state_healing ON label_state (merchant_id)
    WHERE failure_class IN ('retryable', 'configuration', 'drift');
DROP INDEX label_state_failing;

-- When the last automatic verify of a merchant's labels was queued (after a sweep poll, at
-- most once per LABEL_VERIFY_INTERVAL_HOURS; the operator's `esl-sync labels verify`
-- queues one at any time, and is not recorded here).
CREATE TABLE label_verifications (
    merchant_id  text PRIMARY KEY REFERENCES merchants (merchant_id),
    queued_at    timestamptz NOT NULL
);
