-- The pipeline's own bookkeeping. The platform's 16 tables (0001) are left exactly as designed.

-- One row per source (audio recording, photo, textbook or note): where it is and why it stopped.
CREATE TABLE ingest_jobs (
  source_id UUID PRIMARY KEY,
  kind VARCHAR(20) NOT NULL CHECK (kind IN ('audio', 'photo', 'textbook', 'note')),
  user_id UUID NOT NULL,
  class_id UUID NOT NULL,
  title VARCHAR(200),
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
  stage VARCHAR(30) NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  error_code VARCHAR(60),
  error_message TEXT,
  correlation_id UUID,
  upload_event_id UUID,
  chunk_count INTEGER,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ
);

CREATE INDEX idx_ingest_jobs_status ON ingest_jobs(status, updated_at);
CREATE INDEX idx_ingest_jobs_owner ON ingest_jobs(user_id, class_id);

-- One row per source and stage: waiting (enqueued), working (started, heartbeat) or done (finished).
CREATE TABLE ingest_stages (
  source_id UUID NOT NULL REFERENCES ingest_jobs(source_id) ON DELETE CASCADE,
  stage VARCHAR(30) NOT NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
  attempts INTEGER NOT NULL DEFAULT 0,
  units_done INTEGER NOT NULL DEFAULT 0,
  units_total INTEGER,
  unit VARCHAR(20),
  enqueued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ,
  heartbeat_at TIMESTAMPTZ,
  error_code VARCHAR(60),
  error_message TEXT,
  PRIMARY KEY (source_id, stage)
);

-- Which embedded batches of a source are durably in both vector stores; completion is counted from here,
-- so a redelivered batch is counted once.
CREATE TABLE ingest_batches (
  source_id UUID NOT NULL REFERENCES ingest_jobs(source_id) ON DELETE CASCADE,
  part_index INTEGER NOT NULL,
  part_count INTEGER NOT NULL CHECK (part_count > 0),
  batch_index INTEGER NOT NULL,
  batch_count INTEGER NOT NULL CHECK (batch_count > 0),
  chunk_count INTEGER NOT NULL,
  indexed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (source_id, part_index, batch_index)
);

-- Events a consumer has already applied: a redelivery or replay of one of these is a no-op.
CREATE TABLE processed_events (
  consumer VARCHAR(60) NOT NULL,
  event_id UUID NOT NULL,
  processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer, event_id)
);

-- Messages refused before any source could own them (undecodable, no usable source id).
CREATE TABLE rejected_messages (
  id BIGSERIAL PRIMARY KEY,
  consumer VARCHAR(60) NOT NULL,
  topic TEXT NOT NULL,
  kafka_partition INTEGER,
  kafka_offset BIGINT,
  message_key TEXT,
  event_id UUID,
  error_code VARCHAR(60) NOT NULL,
  error_message TEXT NOT NULL,
  payload_excerpt TEXT,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_rejected_messages_received ON rejected_messages(received_at DESC);
