"""`lmgpa top --once` on real PostgreSQL rows whose numbers are known, with one worker serving /metrics
and one not answering."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import asyncpg
import pytest

from shared.cli.main import main
from shared.db.migrate import apply_migrations
from shared.devstack.servers import ServerProcess, create_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

METRICS = """\
# HELP faststream_received_messages_total Count of received messages
# TYPE faststream_received_messages_total counter
faststream_received_messages_total{app_name="faststream",broker="kafka",handler="lmgpa.text.extracted.v1"} 41.0
faststream_received_messages_total{app_name="faststream",broker="kafka",handler="other"} 1.0
# HELP faststream_received_processed_messages_total Count of processed messages
# TYPE faststream_received_processed_messages_total counter
faststream_received_processed_messages_total{app_name="faststream",broker="kafka",handler="h",status="acked"} 39.0
# HELP faststream_received_messages_in_process In process
# TYPE faststream_received_messages_in_process gauge
faststream_received_messages_in_process{app_name="faststream",broker="kafka",handler="h"} 3.0
# HELP faststream_received_processed_messages_exceptions_total Exceptions
# TYPE faststream_received_processed_messages_exceptions_total counter
faststream_received_processed_messages_exceptions_total{app_name="faststream",broker="kafka",handler="h",exception_type="X"} 2.0
# HELP lmgpa_dead_letters_total Dead letters
# TYPE lmgpa_dead_letters_total counter
lmgpa_dead_letters_total{stage="embedding",error_code="internal_error"} 5.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics_port() -> Iterator[int]:
    """A worker's /metrics as the Prometheus client serves it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = METRICS.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


SEED = """
-- A (textbook) reads pages: two ranges of 25 pages in the last minute, one ten minutes ago.
INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage, updated_at)
VALUES ($A, 'textbook', $U, $K, 'Physics', 'processing', 'chunking', now() - interval '5 seconds');
INSERT INTO ingest_stages (source_id, stage, status, attempts, units_done, units_total, unit, enqueued_at, started_at, heartbeat_at)
VALUES ($A, 'upload', 'completed', 1, 0, NULL, NULL, now() - interval '11 minutes', now() - interval '11 minutes', now() - interval '11 minutes'),
       ($A, 'chunking', 'processing', 1, 75, 288, 'pages', now() - interval '11 minutes', now() - interval '11 minutes', now() - interval '5 seconds');
UPDATE ingest_stages SET finished_at = now() - interval '11 minutes' WHERE source_id = $A AND stage = 'upload';
INSERT INTO ingest_pieces (source_id, stage, piece_index, piece_count, units, result, finished_at)
VALUES ($A, 'chunking', 0, 12, 25, '{}', now() - interval '10 minutes'),
       ($A, 'chunking', 1, 12, 25, '{}', now() - interval '20 seconds'),
       ($A, 'chunking', 2, 12, 25, '{}', now() - interval '10 seconds');
-- B (audio) has shown no life for 20 minutes: stalled.
INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage, updated_at, redrives)
VALUES ($B, 'audio', $U, $K, 'Lecture 9', 'processing', 'transcription', now() - interval '20 minutes', 2);
INSERT INTO ingest_stages (source_id, stage, status, attempts, units_done, units_total, unit, enqueued_at, started_at, heartbeat_at)
VALUES ($B, 'transcription', 'processing', 1, 600, 3600, 'seconds', now() - interval '30 minutes', now() - interval '30 minutes', now() - interval '20 minutes');
-- C (note) completed 30 seconds ago: 12 chunks embedded and indexed.
INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage, chunk_count, finished_at)
VALUES ($C, 'note', $U, $K, 'Notes', 'completed', 'indexing', 12, now() - interval '30 seconds');
INSERT INTO ingest_stages (source_id, stage, status, attempts, units_done, units_total, unit, started_at, finished_at)
VALUES ($C, 'embedding', 'completed', 1, 12, 12, 'chunks', now() - interval '40 seconds', now() - interval '30 seconds'),
       ($C, 'indexing', 'completed', 1, 12, 12, 'chunks', now() - interval '35 seconds', now() - interval '30 seconds');
INSERT INTO ingest_batches (source_id, part_index, part_count, batch_index, batch_count, chunk_count, indexed_at)
VALUES ($C, 0, 1, 0, 2, 8, now() - interval '32 seconds'), ($C, 0, 1, 1, 2, 4, now() - interval '30 seconds');
-- D failed ten minutes ago in embedding; E five minutes ago in upload: in the hour, not in the minute.
INSERT INTO ingest_jobs (source_id, kind, user_id, class_id, title, status, stage, error_code, error_message, finished_at)
VALUES ($D, 'note', $U, $K, 'D', 'failed', 'embedding', 'embedding_failed', 'boom', now() - interval '10 minutes'),
       ($E, 'note', $U, $K, 'E', 'failed', 'upload', 'not_text', 'binary', now() - interval '5 minutes');
INSERT INTO ingest_stages (source_id, stage, status, attempts, started_at, finished_at, error_code)
VALUES ($D, 'embedding', 'failed', 1, now() - interval '10 minutes', now() - interval '10 minutes', 'embedding_failed');
"""


async def seed(dsn: str) -> dict[str, uuid.UUID]:
    await apply_migrations(dsn)
    ids = {name: uuid.uuid4() for name in "ABCDE"}
    names = {**ids, "U": uuid.uuid4(), "K": uuid.uuid4()}
    script = SEED
    for name, value in names.items():  # our own UUIDs, written as literals: one script, no parameters
        script = script.replace(f"${name}", f"'{value}'::uuid")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(script)
        await conn.executemany(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, now() - $3::interval)",
            [("embedding", uuid.uuid4(), timedelta(seconds=10)) for _ in range(6)]
            + [("embedding", uuid.uuid4(), timedelta(minutes=5)) for _ in range(4)],
        )
        await conn.executemany(
            "INSERT INTO rejected_messages (consumer, topic, error_code, error_message) VALUES ($1, $2, $3, $4)",
            [("upload", "lmgpa.source.uploaded.v1", "invalid_event", "bad")] * 2,
        )
    finally:
        await conn.close()
    return ids


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        parts = [c.strip() for c in line.strip().strip("│").split("│")]
        if parts and parts[0] == first:
            return parts
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_top_once_shows_the_numbers_of_the_database_and_the_workers(
    postgres_server: ServerProcess,
    metrics_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    report: object,
) -> None:
    dsn = create_database(postgres_server, f"top_{uuid.uuid4().hex[:8]}")
    ids = asyncio.run(seed(dsn))
    dead_port = free_port()  # nothing listens there
    home = tmp_path / "stack"
    home.mkdir()
    env = {"LMGPA_DATABASE_URL": dsn, "LMGPA_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    workers = [
        {"service": "embedding", "replica": 0, "pid": 1, "log_path": "x", "http_port": metrics_port},
        {"service": "indexing", "replica": 0, "pid": 1, "log_path": "x", "http_port": dead_port},
        {"service": "upload", "replica": 0, "pid": 1, "log_path": "x"},
    ]
    state = {"home": str(home), "postgres": {}, "broker": {}, "chroma": {}, "env": env, "workers": workers}
    (home / "stack.json").write_text(json.dumps(state))
    monkeypatch.setenv("LMGPA_DEV_HOME", str(home))
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(SystemExit) as exit_:
        main(["top", "--once"])
    out = capsys.readouterr().out
    report(out)  # type: ignore[operator]
    assert exit_.value.code == 0

    assert "2 in flight, 1 stalled, dead letters: unavailable" in out  # the broker's port is closed
    # STAGE, WAITING, WORKING, STALLED, DONE, FAILED, EVENTS/S, UNITS/S
    assert cells(out, "chunking") == ["chunking", "0", "1", "0", "0", "0", "0.00", "0.83 pages/s"]
    assert cells(out, "transcription")[1:6] == ["0", "0", "1", "0", "0"]
    assert cells(out, "embedding") == ["embedding", "0", "0", "0", "1", "0", "0.10", "0.20 chunks/s"]
    assert cells(out, "indexing") == ["indexing", "0", "0", "0", "1", "0", "0.00", "0.20 chunks/s"]
    assert cells(out, "ocr")[1:] == ["0", "0", "0", "0", "0", "0.00", "-"]

    stalled = cells(out, str(ids["B"])[:8])
    assert stalled[1:4] == ["audio", "transcription", "600/3600 seconds"]
    assert stalled[5] == "STALLED (re-driven 2x)"
    working = cells(out, str(ids["A"])[:8])
    assert working[1:4] == ["textbook", "chunking", "75/288 pages"] and working[5] == "working"
    assert out.index(str(ids["B"])[:8]) < out.index(str(ids["A"])[:8]), "the longest silent first"

    failures = {tuple(cells(out, what)[1:]) for what in ("failed sources", "refused messages")}
    assert ("upload", "invalid_event", "2") in failures
    failed_rows = [line for line in out.splitlines() if "failed sources" in line]
    assert len(failed_rows) == 2
    assert any("embedding_failed" in r and r.rstrip().rstrip("│").strip().endswith("1") for r in failed_rows)
    assert any("not_text" in r for r in failed_rows)

    # RECEIVED, PROCESSED, IN PROGRESS, ERRORS, DEAD LETTERS, summed over label sets.
    assert cells(out, "embedding-0")[1:] == ["42", "39", "3", "2", "5"]
    assert "metrics: unavailable" in " ".join(cells(out, "indexing-0"))  # refused: shown, no crash
    assert "metrics: unavailable (no metrics port)" in " ".join(cells(out, "upload-0"))
