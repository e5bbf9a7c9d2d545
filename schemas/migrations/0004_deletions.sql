-- Tombstones of deleted sources, classes and users. The indexing worker checks them before and after every
-- write, so chunks still in flight when a delete arrives never survive it (no zombie vectors).
CREATE TABLE deletions (
  id BIGSERIAL PRIMARY KEY,
  scope VARCHAR(10) NOT NULL CHECK (scope IN ('source', 'class', 'user')),
  user_id UUID NOT NULL,
  class_id UUID,
  source_id UUID,
  event_id UUID NOT NULL UNIQUE,
  requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  completed_at TIMESTAMPTZ,
  vectors_removed INTEGER
);

CREATE INDEX idx_deletions_source ON deletions(source_id) WHERE source_id IS NOT NULL;
CREATE INDEX idx_deletions_class ON deletions(class_id) WHERE class_id IS NOT NULL;
CREATE INDEX idx_deletions_user ON deletions(user_id);
