-- The product store. Secrets never live here (Clover tokens are in the DynamoDB state).
CREATE TABLE merchants (
    merchant_id            text PRIMARY KEY CHECK (merchant_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    store_code             text CHECK (store_code <> ''),
    clover_base_url        text CHECK (clover_base_url ~ '^https?://'),
    active                 boolean NOT NULL DEFAULT true,
    poll_interval_seconds  integer CHECK (poll_interval_seconds >= 60),
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    source_system         text NOT NULL,
    merchant_id           text NOT NULL REFERENCES merchants (merchant_id),
    source_id             text NOT NULL,
    source_variant_id     text NOT NULL DEFAULT '',
    name                  text NOT NULL,
    barcode               text,
    sku                   text,
    price                 numeric(14, 2),
    cost                  numeric(14, 2),
    currency              text NOT NULL,
    price_type            text NOT NULL,
    unit                  text,
    status                text NOT NULL CHECK (status IN ('active', 'deleted')),
    extra_data            jsonb NOT NULL DEFAULT '{}',
    raw                   jsonb NOT NULL DEFAULT '{}',
    source_modified_time  bigint,
    validation_error      text,
    content_hash          text NOT NULL,
    label_hash            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    deleted_at            timestamptz,
    PRIMARY KEY (source_system, merchant_id, source_id, source_variant_id)
);
CREATE INDEX products_merchant_barcode ON products (merchant_id, barcode);

-- What Hipoink last acknowledged for each label, and the last failure.
CREATE TABLE label_state (
    merchant_id      text NOT NULL REFERENCES merchants (merchant_id),
    pc               text NOT NULL,
    label_hash       text,           -- NULL: the product was deleted on Hipoink
    acknowledged_at  timestamptz,
    failure_class    text,
    failure_message  text,
    failed_at        timestamptz,
    PRIMARY KEY (merchant_id, pc)
);
