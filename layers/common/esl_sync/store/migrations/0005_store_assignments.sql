-- Merchants onboard themselves through Clover's app install (esl_sync.onboarding). A merchant
-- that installs the app is registered with the Hipoink store code it already has, else the
-- one an operator assigned to it here beforehand (`esl-sync merchants set-store MID STORE`
-- before the install; the install consumes the row), else a configured rule's
-- (ONBOARDING_STORE_CODE_TEMPLATE), else none: it then awaits one (merchants.store_code IS
-- NULL; the dispatcher skips it, `status` and the MerchantsAwaitingStoreCode gauge show it).
CREATE TABLE store_assignments (
    merchant_id  text PRIMARY KEY CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    store_code   text NOT NULL CHECK (store_code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$'),
    assigned_at  timestamptz NOT NULL DEFAULT now()
);
