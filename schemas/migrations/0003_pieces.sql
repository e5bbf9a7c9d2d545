-- Pieces of long work (spans of a recording, page ranges of a book): each finished piece is kept, so a restart
-- redoes only the piece that was in flight, and the stage completes exactly once when the last piece is in.
CREATE TABLE ingest_pieces (
  source_id UUID NOT NULL REFERENCES ingest_jobs(source_id) ON DELETE CASCADE,
  stage VARCHAR(30) NOT NULL,
  piece_index INTEGER NOT NULL,
  piece_count INTEGER NOT NULL CHECK (piece_count > 0),
  units INTEGER NOT NULL DEFAULT 0,
  result JSONB NOT NULL,
  finished_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (source_id, stage, piece_index)
);
