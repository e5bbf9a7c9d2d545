"""`lmgpa watch` (and `ingest --wait`'s bars) on real PostgreSQL rows written the way the workers write them:
bars that advance on a terminal, the unchanged one-line outcome elsewhere."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from shared.cli.backend import watch_source
from shared.cli.main import main
from shared.cli.progress import StageBars
from shared.db import jobs
from shared.db.jobs import JobRow
from shared.db.migrate import apply_migrations
from shared.db.pool import create_pool
from shared.devstack.servers import ServerProcess, create_database
from shared.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def dsn(postgres_server: ServerProcess) -> str:
    url = create_database(postgres_server, "watch_it")
    asyncio.run(apply_migrations(url))
    return url


async def open_book(dsn: str) -> uuid.UUID:
    """A textbook the upload worker accepted and handed to chunking: 100 pages to read."""
    source_id = uuid.uuid4()
    pool = await create_pool(dsn, max_size=1)
    try:
        await jobs.open_job(
            pool,
            source_id=source_id,
            kind="textbook",
            user_id=uuid.uuid4(),
            class_id=uuid.uuid4(),
            title="Biology",
            correlation_id=source_id,
            upload_event_id=source_id,
        )
        await jobs.finish_stage(pool, source_id=source_id, stage="upload")
        await jobs.enqueue_stage(pool, source_id=source_id, stage="chunking")
        await jobs.start_stage(pool, source_id=source_id, stage="chunking", units_total=100, unit="pages")
    finally:
        await pool.close()
    return source_id


async def test_on_a_terminal_the_bars_advance_with_the_pipelines_progress(dsn: str) -> None:
    source_id = await open_book(dsn)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    seen: list[tuple[tuple[str, str, int], ...]] = []
    progressed = asyncio.Event()

    with StageBars(console) as bars:

        def on_progress(job: JobRow | None) -> None:
            bars.update(job)
            if job is not None:
                seen.append(tuple((s.stage, s.status, s.units_done) for s in job.stages))
                if any(s.stage == "chunking" and s.units_done == 40 for s in job.stages):
                    progressed.set()

        watching = asyncio.create_task(
            watch_source(Settings(database_url=dsn), source_id, wait_seconds=60, on_progress=on_progress)
        )
        pool = await create_pool(dsn, max_size=1)
        try:
            # As the chunking worker reports its page ranges, then the later stages finish.
            await jobs.progress_stage(pool, source_id=source_id, stage="chunking", units_done=40)
            await asyncio.wait_for(progressed.wait(), 30)
            await jobs.finish_stage(pool, source_id=source_id, stage="chunking", units_done=100)
            await jobs.start_stage(pool, source_id=source_id, stage="embedding", units_total=3, unit="parts")
            await jobs.finish_stage(pool, source_id=source_id, stage="embedding", units_done=3)
            await jobs.start_stage(pool, source_id=source_id, stage="indexing", unit="chunks")
            await jobs.finish_stage(pool, source_id=source_id, stage="indexing", units_done=212)
            await jobs.complete_job(pool, source_id=source_id, chunk_count=212)
            result = await asyncio.wait_for(watching, 30)
        finally:
            await pool.close()

    assert result["status"] == "completed" and result["chunk_count"] == 212
    screen = ANSI.sub("", buffer.getvalue())
    # Each state was drawn, in order: the pages read so far, then every stage done.
    first = screen.index("0/100 pages")
    middle = screen.index("40/100 pages", first)
    last = screen.index("100/100 pages", middle)
    assert "3/3 parts" in screen[last:] and "212/212 chunks" in screen[last:]
    final = screen[screen.rindex("upload") :]
    assert [line.split()[0] for line in final.splitlines() if line.strip()][:4] == [
        "upload",
        "chunking",
        "embedding",
        "indexing",
    ]
    assert "━" in screen, "bars were drawn"
    assert any(("chunking", "processing", 40) in snapshot for snapshot in seen)


def test_not_on_a_terminal_watch_prints_only_the_outcome(
    dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source_id = asyncio.run(open_book(dsn))

    async def finish() -> None:
        pool = await create_pool(dsn, max_size=1)
        try:
            await jobs.finish_stage(pool, source_id=source_id, stage="chunking", units_done=100)
            await jobs.complete_job(pool, source_id=source_id, chunk_count=7)
        finally:
            await pool.close()

    asyncio.run(finish())
    monkeypatch.setenv("LMGPA_DEV_HOME", str(tmp_path))  # no stack there
    monkeypatch.setenv("LMGPA_DATABASE_URL", dsn)
    with pytest.raises(SystemExit) as exit_:
        main(["watch", str(source_id)])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert out == f"textbook {source_id}: completed, 7 chunks\n"  # no bar, no escape code

    with pytest.raises(SystemExit) as exit_:
        main(["watch", str(uuid.uuid4())])
    captured = capsys.readouterr()
    assert exit_.value.code != 0 and "not found" in captured.err and captured.out == ""
