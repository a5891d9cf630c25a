DROP TABLE outbox_dead_letter;
DROP TABLE outbox;
