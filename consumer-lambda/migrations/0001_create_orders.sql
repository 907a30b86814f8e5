-- One row per accepted order, keyed by the client-chosen order id, which makes
-- every redelivery, retried POST and DLQ replay an idempotent no-op.
--
-- Line items live in a JSONB column rather than a child table: an order is an
-- immutable document written once and read whole, and one row per order keeps
-- the bulk insert to a single statement over a single table.
CREATE TABLE orders (
    order_id       uuid        PRIMARY KEY,
    customer_id    text        NOT NULL CHECK (customer_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    currency       char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    items          jsonb       NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    total_cents    bigint      NOT NULL CHECK (total_cents >= 0),
    -- When the producer accepted the order.
    received_at    timestamptz NOT NULL,
    -- When the consumer stored it, and from which SQS message (first delivery wins).
    stored_at      timestamptz NOT NULL DEFAULT now(),
    sqs_message_id text        NOT NULL
);

CREATE INDEX orders_customer_received ON orders (customer_id, received_at);
