-- The previous release writes any sqs_message_id; a constraint on it is the next release's to add.
ALTER TABLE order_conflicts ADD CONSTRAINT order_conflicts_one_per_message UNIQUE (sqs_message_id);
