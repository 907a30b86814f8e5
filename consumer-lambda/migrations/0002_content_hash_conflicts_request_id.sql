-- What lets a second, different order under an existing order_id be told from a
-- redelivery, and kept instead of dropped; and the id that follows an order from
-- its HTTP request to its row.

-- SHA-256 of the order as the contract serialises it (id, customer, currency,
-- items): a retried POST, a redelivery and a replay hash the same, since the
-- producer's received_at and the message id are left out. Rows stored before
-- this migration have none; a repeat of one counts as a duplicate.
ALTER TABLE orders
    ADD COLUMN content_sha256 bytea CHECK (octet_length(content_sha256) = 32),
    -- The producer's request id (X-Request-Id), when the message carried one.
    ADD COLUMN request_id text CHECK (length(request_id) <= 200);

-- A message whose order_id is already stored with other content. The first
-- write wins; the newcomer is kept here, once per distinct content, for a
-- person to look at (the consumer counts it in its Conflicts metric, which
-- raises an alarm).
CREATE TABLE order_conflicts (
    order_id       uuid        NOT NULL,
    content_sha256 bytea       NOT NULL CHECK (octet_length(content_sha256) = 32),
    -- The message that carried it, and the newcomer as the contract reads it.
    sqs_message_id text        NOT NULL,
    request_id     text,
    body           jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, content_sha256)
);
