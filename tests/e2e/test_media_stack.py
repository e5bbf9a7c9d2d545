"""A lecture recording, a phone photo of notes and a textbook PDF through the embedded stack and real engines
(Whisper, Tesseract, pypdf), every worker a separate process; then an hour-long lecture and a scanned book,
watched through `lmgpa status` while they run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.e2e.cli import lmgpa, purge
from tests.media.pdfs import make_scanned_pdf
from tests.media.photos import note_photo, save_with_orientation
from tests.media.speech import encode, make_lecture, speak

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
SPOKEN_ONLY = "Quaternions let a spacecraft turn its attitude smoothly without ever running into gimbal lock."
LECTURE = [
    "Good morning everyone, today we finish the unit on rotations.",
    SPOKEN_ONLY,
    "For the homework, convert three rotation matrices into axis and angle form.",
]

AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS status_audit (
  tbl TEXT, id UUID, old_status TEXT, new_status TEXT, at TIMESTAMPTZ DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE old_value TEXT; new_value TEXT;
BEGIN
  EXECUTE format('SELECT ($1).%I::text', TG_ARGV[0]) INTO new_value USING NEW;
  IF TG_OP = 'UPDATE' THEN
    EXECUTE format('SELECT ($1).%I::text', TG_ARGV[0]) INTO old_value USING OLD;
  END IF;
  IF old_value IS DISTINCT FROM new_value THEN
    INSERT INTO status_audit (tbl, id, old_status, new_status) VALUES (TG_TABLE_NAME, NEW.id, old_value, new_value);
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS audit_audio ON audio_recordings;
CREATE TRIGGER audit_audio AFTER INSERT OR UPDATE ON audio_recordings
  FOR EACH ROW EXECUTE FUNCTION audit_status('transcript_status');
DROP TRIGGER IF EXISTS audit_photos ON photos;
CREATE TRIGGER audit_photos AFTER INSERT OR UPDATE ON photos
  FOR EACH ROW EXECUTE FUNCTION audit_status('extraction_status');
DROP TRIGGER IF EXISTS audit_books ON textbook_downloads;
CREATE TRIGGER audit_books AFTER INSERT OR UPDATE ON textbook_downloads
  FOR EACH ROW EXECUTE FUNCTION audit_status('embedding_status');
"""


BOOK = [
    (
        "text",
        "Photosynthesis",
        "Chlorophyll in the thylakoid membranes captures red and blue light to split water and release oxygen.",
    ),
    (
        "scan",
        "Plate tectonics",
        "Oceanic crust sinks beneath continental crust at subduction zones, building volcanic mountain ranges.",
    ),
    (
        "text",
        "The French Revolution",
        "The storming of the Bastille in July 1789 became the symbol of the revolt against royal power.",
    ),
    (
        "scan",
        "Supply and demand",
        "When the price of coffee rises, buyers purchase less of it and growers plant more coffee trees.",
    ),
    (
        "text",
        "DNA replication",
        "Helicase unwinds the double helix so that DNA polymerase can copy each strand in the five to three direction.",
    ),
    ("blank", "", ""),
]
"""Pages with one subject each, some with a text layer and some scanned: what only page N says is clear."""


def make_book(path: Path) -> None:
    """A six-page chapter: text pages, scanned pages (image only, no text layer) and a blank page."""
    from tests.media.pdfs import Block, _draw_scan_page, _draw_text_page, _new_canvas, render_scan

    canvas = _new_canvas(path)
    for page, (kind, heading, sentence) in enumerate(BOOK, start=1):
        blocks = [
            Block("header", "General Science Reader"),
            Block("heading", heading),
            Block("body", f"{sentence} This idea comes back throughout the chapter on {heading.lower()}."),
            Block("footer", str(page)),
        ]
        if kind == "text":
            _draw_text_page(canvas, blocks)
        elif kind == "scan":
            _draw_scan_page(canvas, render_scan(blocks, seed=page))
        canvas.showPage()
    canvas.save()


def stack_env(home: Path) -> dict[str, str]:
    lines = lmgpa(home, "dev", "env").stdout.splitlines()
    return {k: json.loads(v) for k, v in (line.removeprefix("export ").split("=", 1) for line in lines)}


async def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await conn.fetch(query, *args)
            if args or query.lstrip().upper().startswith("SELECT")
            else [await conn.execute(query)]
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def media_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("media-stack")
    lmgpa(home, "dev", "up")
    env = stack_env(home)
    asyncio.run(sql(env["LMGPA_DATABASE_URL"], AUDIT_SQL))
    try:
        yield home, env
    finally:
        purge(home)


def ingest(home: Path, path: Path, user: uuid.UUID, klass: uuid.UUID, *extra: str) -> dict[str, Any]:
    result = lmgpa(
        home,
        "ingest",
        str(path),
        "--user",
        str(user),
        "--class",
        str(klass),
        "--create-owner",
        "--json",
        *extra,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def search(home: Path, query: str, user: uuid.UUID, klass: uuid.UUID, kind: str) -> list[dict[str, Any]]:
    out = lmgpa(
        home, "search", query, "--user", str(user), "--class", str(klass), "--type", kind, "--json"
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def test_a_recording_a_photo_and_a_textbook_become_searchable(
    media_stack: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, env = media_stack
    user, klass = uuid.uuid4(), uuid.uuid4()

    wav = speak(" ".join(LECTURE), tmp_path / "rotations.wav")
    lecture = encode(wav, tmp_path / "rotations.m4a", "m4a")
    photo = note_photo("phone")
    photo_path = save_with_orientation(photo.image, tmp_path / "whiteboard.jpg")
    make_book(tmp_path / "chapter.pdf")

    results = {
        "audio": ingest(home, lecture, user, klass, "--wait", "--timeout", "600"),
        "photo": ingest(home, photo_path, user, klass, "--wait", "--timeout", "600"),
        "textbook": ingest(home, tmp_path / "chapter.pdf", user, klass, "--wait", "--timeout", "600"),
    }
    for kind, result in results.items():
        assert result["status"] == "completed", (kind, result)
        assert result["stages"][0]["stage"] == "upload"

    # Every status column went pending -> processing -> completed.
    audit = asyncio.run(
        sql(env["LMGPA_DATABASE_URL"], "SELECT tbl, id, new_status FROM status_audit ORDER BY at")
    )
    for kind, table in (
        ("audio", "audio_recordings"),
        ("photo", "photos"),
        ("textbook", "textbook_downloads"),
    ):
        trail = [
            r["new_status"] for r in audit if r["tbl"] == table and str(r["id"]) == results[kind]["source_id"]
        ]
        assert trail == ["pending", "processing", "completed"], (kind, trail)
    rows = asyncio.run(
        sql(
            env["LMGPA_DATABASE_URL"],
            "SELECT (SELECT duration_seconds FROM audio_recordings WHERE id = $1) AS duration,"
            " (SELECT transcript_text FROM audio_recordings WHERE id = $1) AS transcript,"
            " (SELECT vector_id FROM audio_recordings WHERE id = $1) AS audio_vector,"
            " (SELECT extracted_text FROM photos WHERE id = $2) AS photo_text,"
            " (SELECT page_count FROM textbook_downloads WHERE id = $3) AS pages,"
            " (SELECT total_chunks FROM textbook_downloads WHERE id = $3) AS chunks",
            uuid.UUID(results["audio"]["source_id"]),
            uuid.UUID(results["photo"]["source_id"]),
            uuid.UUID(results["textbook"]["source_id"]),
        )
    )[0]
    assert 5 <= rows["duration"] <= 40 and "gimbal" in rows["transcript"].lower()
    assert rows["audio_vector"] == f"recording_{results['audio']['source_id']}"
    assert "derivative" in rows["photo_text"].lower() or "integral" in rows["photo_text"].lower()
    assert rows["pages"] == 6 and rows["chunks"] == results["textbook"]["chunk_count"] >= 5

    spoken = search(home, "how does a spacecraft avoid gimbal lock", user, klass, "transcripts")
    assert spoken[0]["source_id"] == results["audio"]["source_id"] and "gimbal" in spoken[0]["text"].lower()
    assert (
        0
        <= spoken[0]["metadata"]["start_seconds"]
        < spoken[0]["metadata"]["end_seconds"]
        <= rows["duration"] + 1
    )

    written = photo.text.splitlines()[2]
    seen = search(home, written, user, klass, "photos")
    assert seen[0]["source_id"] == results["photo"]["source_id"], (written, seen[0]["text"])
    assert "confidence" in seen[0]["metadata"]

    for page, (kind, _, sentence) in enumerate(BOOK, start=1):
        if kind == "blank":
            continue
        printed = search(home, sentence, user, klass, "textbooks")
        assert printed[0]["metadata"]["page_start"] == page, (
            page,
            kind,
            printed[0]["metadata"],
            printed[0]["text"][:200],
        )
    scanned_page, scanned = next((n, b) for n, b in enumerate(BOOK, start=1) if b[0] == "scan")
    human = lmgpa(home, "search", scanned[2], "--user", str(user), "--class", str(klass)).stdout
    assert f"p.{scanned_page}" in human


def test_an_hour_of_audio_and_a_scanned_book_show_progress_while_they_run(
    media_stack: tuple[Path, dict[str, str]], tmp_path: Path, report: Any
) -> None:
    home, _ = media_stack
    user, klass = uuid.uuid4(), uuid.uuid4()
    wav = tmp_path / "long.wav"
    make_lecture(wav, seconds=4300)  # espeak talks faster than the text's estimate: this is over an hour
    long_audio = encode(wav, tmp_path / "long.ogg", "ogg")
    wav.unlink()
    make_scanned_pdf(tmp_path / "scanned.pdf", pages=30)

    audio = ingest(home, long_audio, user, klass)
    book = ingest(home, tmp_path / "scanned.pdf", user, klass)
    seen: dict[str, set[tuple[int, int | None]]] = {"transcription": set(), "chunking": set()}
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 1200
    while len(done) < 2 and time.monotonic() < deadline:
        for result in (audio, book):
            if result["source_id"] in done:
                continue
            [source] = json.loads(lmgpa(home, "status", result["source_id"], "--json").stdout)["sources"]
            for stage in source["stages"]:
                if stage["stage"] in seen and stage["status"] == "processing":
                    seen[stage["stage"]].add((stage["units_done"], stage["units_total"]))
            if source["status"] in ("completed", "failed"):
                done[result["source_id"]] = source
        time.sleep(2)
    assert len(done) == 2, "both must finish in time"
    assert [s["status"] for s in done.values()] == ["completed", "completed"], done
    # Progress was visible: several distinct partial counts, each below the total.
    for stage, points in seen.items():
        partial = {p for p in points if p[1] and 0 < p[0] < p[1]}
        assert len(partial) >= 1, (stage, sorted(points))
    [audio_source] = [s for s in done.values() if s["kind"] == "audio"]
    transcription = next(s for s in audio_source["stages"] if s["stage"] == "transcription")
    assert transcription["unit"] == "seconds" and transcription["units_total"] >= 3600, transcription
    assert transcription["units_done"] == transcription["units_total"]
    [book_source] = [s for s in done.values() if s["kind"] == "textbook"]
    chunking = next(s for s in book_source["stages"] if s["stage"] == "chunking")
    assert (chunking["units_done"], chunking["units_total"], chunking["unit"]) == (30, 30, "pages")
    report(
        f"\nprogress seen: transcription {sorted(seen['transcription'])}, chunking {sorted(seen['chunking'])}"
    )
