-- Expand: a nullable column with a check on itself, a NOT NULL column with a
-- default, and a new table with its own constraints. The previous release
-- writes none of them.
ALTER TABLE orders
    ADD COLUMN gift_wrap boolean CHECK (gift_wrap IS NOT FALSE),
    ADD COLUMN channel text NOT NULL DEFAULT 'web';
CREATE TABLE order_notes (
    order_id uuid NOT NULL REFERENCES orders (order_id),
    note     text NOT NULL CHECK (length(note) <= 500)
);
