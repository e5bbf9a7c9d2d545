-- Deliveries of a message that have begun and not ended in a commit, per consumer. A row is written (or its
-- count raised) before a worker handles a message and removed once the message is committed, so the count is
-- the message's deliveries so far, whichever process had them: it bounds transient retries across replicas
-- and restarts, and a message that keeps taking its worker down (killed, out of memory, a native crash) is
-- failed and dead-lettered instead of crash-looping; a batch whose delivery did not end is handled one message
-- at a time until the culprit is found.
CREATE TABLE message_deliveries (
  consumer VARCHAR(50) NOT NULL,
  topic VARCHAR(200) NOT NULL,
  kafka_partition INTEGER NOT NULL,
  kafka_offset BIGINT NOT NULL,
  fingerprint TEXT NOT NULL,           -- sha256 of key and value: a recreated topic reuses offsets
  deliveries INTEGER NOT NULL DEFAULT 1,
  solo_attempts INTEGER NOT NULL DEFAULT 0,
  first_delivered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_delivered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, topic, kafka_partition, kafka_offset)
);
