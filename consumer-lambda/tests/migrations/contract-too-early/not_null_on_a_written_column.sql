-- The previous release leaves request_id empty when the message has none.
ALTER TABLE orders ALTER COLUMN request_id SET NOT NULL;
