-- Reprocessing: every run of a source is a generation. Its vectors are written hidden and shown in one step
-- when complete (the previous generation removed in the same step), so a reader never sees both, or neither.
ALTER TABLE ingest_jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;

ALTER TABLE ingest_batches ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ingest_batches DROP CONSTRAINT ingest_batches_pkey;
ALTER TABLE ingest_batches ADD PRIMARY KEY (source_id, generation, part_index, batch_index);
