-- What the status function reads (issue 34). A customer's stored orders,
-- by id or newest first, are found by the primary key and by
-- orders_customer_received (0001, read backwards). A kept-aside newcomer's
-- customer is only in its body: this index finds a customer's conflicts,
-- newest first, without reading the table.
CREATE INDEX order_conflicts_customer_recorded
    ON order_conflicts ((body ->> 'customer_id'), recorded_at);
