-- Deliveries of a message that have begun and not finished, per consumer. A row is written before a worker
-- handles a message and removed once its effects are durable, so a row that outlives its delivery means the
-- process died in the middle (killed, out of memory, a native crash). The runner counts them across
-- processes: a message that keeps taking its worker down is failed and dead-lettered instead of crash-looping,
-- and a batch that was cut short is handled one message at a time until the culprit is found.
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
