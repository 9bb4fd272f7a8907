-- Which record Hipoink refused on a label (README, "Label delivery": a bad record is not
-- retried until its product changes). A job that fails for a retryable reason after Hipoink
-- refused one of its records by name comes back whole from SQS: its retry must neither send
-- that record again (a call, the refusal counted twice) nor overwrite its refusal with the
-- retry's own failure (the label then looked retryable, and the heal queued it again and
-- again). refused_hash and refused_version: the label hash (NULL: a delete) and the job
-- version of the record of a bad_record failure Hipoink gave; NULL otherwise (any other
-- failure, an acknowledgement, a job from before versions).
ALTER TABLE label_state ADD COLUMN refused_hash text, ADD COLUMN refused_version bigint;
