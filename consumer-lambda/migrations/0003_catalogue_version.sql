-- Which version of the shop's catalogue priced an order (messages of
-- schema_version 2 carry it), for the record. Nullable: orders stored before,
-- and version 1 messages still on the queue, have none.
ALTER TABLE orders
    ADD COLUMN catalogue_version text CHECK (length(catalogue_version) BETWEEN 1 AND 64);
