-- What each merchant's last label verify found (esl_sync.sync.verify), for `esl-sync status`.
--
-- A verify's outcome lived only in one log line and three metrics: when a store's labels
-- were last compared with what Hipoink holds, and whether that was refused (an answer format
-- read wrong is refused on every verify), could not be asked. The sender writes one row per
-- merchant after each verify, in one statement (a failure to write it is logged and fails
-- neither the verify nor the label queue's batch): the last verify, whoever asked for it.
-- A new table, so senders of the code before it (during a deploy, or after a roll back)
-- neither write nor read it; label_verifications (when the sweep last queued one) is left
-- as it is, so pollers old and new claim a sweep's verify as before.
CREATE TABLE label_verify_results (
    merchant_id       text PRIMARY KEY REFERENCES merchants (merchant_id),
    store_code        text NOT NULL,            -- the store verified
    requested_by      text NOT NULL,            -- the request's reason: sweep or manual
    verified_at       timestamptz NOT NULL,     -- when the verify ended
    compared          integer NOT NULL,         -- labels compared with what Hipoink holds
    drifted           integer NOT NULL,         -- ... found drifted
    marked            integer NOT NULL,         -- ... and marked (none when refused)
    unknown_codes     integer NOT NULL,         -- codes Hipoink holds that the ledger does not know
    skipped_products  integer NOT NULL,         -- held products without a usable code
    refused           text,                     -- the refusal's named reason; NULL: completed
    refused_in_a_row  integer NOT NULL,         -- refusals since the last completed verify
    completed_at      timestamptz               -- the last verify that was not refused
);
