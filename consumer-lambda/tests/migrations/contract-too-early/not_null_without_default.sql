-- The previous release inserts orders without this column: every row refused.
ALTER TABLE orders ADD COLUMN gift_wrap boolean NOT NULL;
