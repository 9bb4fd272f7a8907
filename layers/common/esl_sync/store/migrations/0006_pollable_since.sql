-- Freshness after a resume. The dispatcher judges a merchant's age from its last successful
-- poll, or, before one, its registration (created_at). A merchant disabled for longer than
-- three intervals and enabled again, or one that waited days for its Hipoink store code,
-- was counted stale at the very next tick, before its first poll could run: a false
-- MerchantNotFreshAlarm on every resume. pollable_since is when the merchant last became
-- pollable (active, with a store code); its age runs from the later of that and its last
-- success (esl_sync.sync.fleet). NULL (rows older than this column, and a merchant pollable
-- from its registration): created_at stands in, as before.
ALTER TABLE merchants ADD COLUMN pollable_since timestamptz;

-- Set by the database on the change itself, so every path that enables a merchant or gives
-- it its first store code records it: `merchants enable`, `merchants add` (which
-- re-enables), `merchants set-store`, an install of the app (re-activation, an assigned
-- code), a hand edit. Only a change from not pollable to pollable: enabling an enabled
-- merchant, or moving it to another store, leaves it as it was.
CREATE FUNCTION merchants_note_pollable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.active AND NEW.store_code IS NOT NULL
        AND NOT (OLD.active AND OLD.store_code IS NOT NULL) THEN
        NEW.pollable_since := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER merchants_pollable_since BEFORE UPDATE ON merchants
    FOR EACH ROW EXECUTE FUNCTION merchants_note_pollable();
