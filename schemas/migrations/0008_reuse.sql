-- Reuse of identical uploads: a source's results are keyed by its file's SHA-256 and the pipeline version (every
-- setting its chunks and vectors depend on: shared/pipeline_version.py). A later upload of the same bytes of the
-- same kind, under the same version, copies a completed source's vectors and rows instead of computing them.
ALTER TABLE ingest_jobs ADD COLUMN content_sha256 CHAR(64);
ALTER TABLE ingest_jobs ADD COLUMN pipeline_version CHAR(64);
-- Whether this source's results were copied (never from whom: nothing of another uploader is kept in its rows).
ALTER TABLE ingest_jobs ADD COLUMN reused BOOLEAN NOT NULL DEFAULT false;

CREATE INDEX idx_ingest_jobs_content ON ingest_jobs(content_sha256, pipeline_version, kind)
  WHERE status = 'completed' AND content_sha256 IS NOT NULL;
