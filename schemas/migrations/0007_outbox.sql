-- PostgreSQL, not the broker's log, is the source of truth for what still has to happen. Every stage's input
-- event is written here before it is published (the transactional-outbox pattern; a backend may write its
-- uploads here too), and removed once its consumer has applied it. A row still here whose job is unfinished
-- is work the broker may have lost (a restart of an in-memory broker, retention, a deleted topic, a crash
-- between writing and publishing): the reconciler publishes it again, under the same event id, so a consumer
-- that did apply it skips it (processed_events).
CREATE TABLE event_outbox (
  event_id UUID PRIMARY KEY,
  source_id UUID NOT NULL,
  consumer VARCHAR(60) NOT NULL,       -- the worker whose input it is
  topic VARCHAR(200) NOT NULL,
  message_key BYTEA NOT NULL,
  payload BYTEA NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  redrives INTEGER NOT NULL DEFAULT 0,
  last_redrive_at TIMESTAMPTZ
);
CREATE INDEX idx_event_outbox_source ON event_outbox(source_id);

ALTER TABLE ingest_jobs ADD COLUMN redrives INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ingest_jobs ADD COLUMN last_redrive_at TIMESTAMPTZ;

-- What the reconciler must remember between passes and processes (the broker epoch it last marked).
CREATE TABLE reconciler_state (
  name VARCHAR(60) PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_rejected_messages_event ON rejected_messages(event_id);
