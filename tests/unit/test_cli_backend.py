"""The CLI's backend helpers: loading event fixtures for publishing, and rendering a status report."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.upload.handlers import Limits, accept_upload
from shared.cli.backend import load_fixtures, render_status
from shared.events import topics
from shared.events.models import SourceUploaded
from shared.ports import SourceRow
from shared.storage import StoredFile

USER = "7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44"
CLASS = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
ROW_ID = "6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c"


def note_fixture(**overrides: Any) -> dict[str, Any]:
    return {
        "event_id": "9b3f6a2e-4c1d-4e8f-a7b6-0d5c3e2f1a90",
        "event_type": "SourceUploaded",
        "schema_version": 1,
        "occurred_at": "2024-09-12T14:06:02.125000Z",
        "correlation_id": "9b3f6a2e-4c1d-4e8f-a7b6-0d5c3e2f1a90",
        "causation_id": None,
        "producer": "backend",
        "kind": "note",
        "user_id": USER,
        "class_id": CLASS,
        "title": "Lecture 3: Derivatives",
        "text": "The derivative measures the instantaneous rate of change. The chain rule handles compositions.",
        "note_type": "lecture",
    } | overrides


def text_extracted_fixture() -> dict[str, Any]:
    return {
        "event_id": "2a7c5e3f-1b9d-4f6a-8e0c-3d4b5a6f7e81",
        "event_type": "TextExtracted",
        "schema_version": 1,
        "occurred_at": "2024-09-12T14:09:40Z",
        "correlation_id": "1d6c9b0e-8f2a-4a5b-9e3c-4b7d2f1a0c98",
        "causation_id": "c4e2a1b0-7d6f-4a3e-8b9c-1f0e2d3c4b5a",
        "producer": "ocr",
        "source": {
            "source_id": ROW_ID,
            "kind": "photo",
            "user_id": USER,
            "class_id": CLASS,
            "title": "Whiteboard: Krebs cycle",
            "created_at": "2024-09-12T14:05:31Z",
        },
        "segments": [{"text": "Citrate -> isocitrate -> alpha-ketoglutarate", "page": 1, "confidence": 88.0}],
        "part_index": 0,
        "part_count": 1,
    }


def write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def test_json_object_is_one_message_to_its_event_types_topic(tmp_path: Path) -> None:
    item = note_fixture()
    path = write(tmp_path / "note.json", json.dumps(item, indent=2))

    ((topic, key, value),) = load_fixtures(path)

    assert topic == topics.SOURCE_UPLOADED
    assert json.loads(value) == item
    assert key == str(SourceUploaded.model_validate(item).source_id).encode()


def test_json_list_gives_one_message_per_item_in_order(tmp_path: Path) -> None:
    items = [note_fixture(), text_extracted_fixture()]
    path = write(tmp_path / "chain.json", json.dumps(items))

    messages = load_fixtures(path)

    assert [t for t, _, _ in messages] == [topics.SOURCE_UPLOADED, topics.TEXT_EXTRACTED]
    assert [json.loads(v) for _, _, v in messages] == items
    assert messages[1][1] == ROW_ID.encode()


def test_jsonl_file_gives_one_message_per_non_blank_line(tmp_path: Path) -> None:
    items = [
        note_fixture(),
        note_fixture(event_id="0f1e2d3c-4b5a-4968-8776-655443322110", title="Lecture 4: Integrals"),
        text_extracted_fixture(),
    ]
    path = write(
        tmp_path / "batch.jsonl",
        "\n".join(json.dumps(i) for i in items[:2]) + "\n\n" + json.dumps(items[2]) + "\n",
    )

    messages = load_fixtures(path)

    assert [json.loads(v) for _, _, v in messages] == items
    assert [t for t, _, _ in messages] == [
        topics.SOURCE_UPLOADED,
        topics.SOURCE_UPLOADED,
        topics.TEXT_EXTRACTED,
    ]
    assert messages[0][1] != messages[1][1], "two uploads without row ids are two sources"


def test_malformed_json_in_a_topic_folder_is_published_raw_to_that_topic(tmp_path: Path) -> None:
    raw = '{"event_type": "SourceUploaded", "kind": "note", "title": "Lecture 3: Deriv\n'
    path = write(tmp_path / topics.SOURCE_UPLOADED / "broken.json", raw)

    ((topic, key, value),) = load_fixtures(path)

    assert topic == topics.SOURCE_UPLOADED
    assert value == raw.encode("utf-8")
    assert key


def test_malformed_json_outside_a_topic_folder_needs_a_topic(tmp_path: Path) -> None:
    path = write(tmp_path / "fixtures" / "broken.json", "{not json")

    with pytest.raises(ValueError, match="topic"):
        load_fixtures(path)
    ((topic, _, value),) = load_fixtures(path, topic=topics.TEXT_EXTRACTED)
    assert (topic, value) == (topics.TEXT_EXTRACTED, b"{not json")


def test_event_type_wins_over_the_folder_and_explicit_topic_wins_over_both(tmp_path: Path) -> None:
    path = write(tmp_path / topics.SOURCE_UPLOADED / "extracted.json", json.dumps(text_extracted_fixture()))

    assert load_fixtures(path)[0][0] == topics.TEXT_EXTRACTED
    assert load_fixtures(path, topic="lmgpa.replay.test.v1")[0][0] == "lmgpa.replay.test.v1"


def test_fixture_without_event_type_takes_its_folders_topic(tmp_path: Path) -> None:
    item = note_fixture()
    del item["event_type"]
    path = write(tmp_path / topics.SOURCE_UPLOADED / "untyped.json", json.dumps(item))

    ((topic, _, _),) = load_fixtures(path)

    assert topic == topics.SOURCE_UPLOADED


def test_unknown_topic_without_topic_option_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "misc" / "event.json", json.dumps({"event_type": "LectureTranscribed", "id": 1}))

    with pytest.raises(ValueError, match="topic"):
        load_fixtures(path)


def test_upload_key_with_row_id_is_the_row_id(tmp_path: Path) -> None:
    path = write(tmp_path / "existing.json", json.dumps(note_fixture(row_id=ROW_ID, text=None)))

    ((_, key, _),) = load_fixtures(path)

    assert key == ROW_ID.encode()


class _Directory:
    async def class_owner(self, class_id: uuid.UUID) -> uuid.UUID | None:
        return uuid.UUID(USER)

    async def find_source(self, kind: str, source_id: uuid.UUID) -> SourceRow | None:
        return None

    async def is_deleted(self, *, user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID) -> bool:
        return False

    async def accept(
        self,
        event: SourceUploaded,
        *,
        text: str | None,
        stored: StoredFile | None,
        next_stage: str,
        content_key: object = None,
    ) -> SourceRow:
        return SourceRow(
            source_id=event.source_id,
            kind=event.kind,
            user_id=event.user_id,
            class_id=event.class_id,
            title=event.title,
            created_at=datetime(2024, 9, 12, 14, 6, 3, tzinfo=UTC),
            text=text,
            vector_id=None,
        )


class _NoStorage:
    def resolve(self, url: str) -> StoredFile:
        raise AssertionError("a note never touches storage")


async def test_upload_key_is_the_source_id_the_upload_worker_computes(tmp_path: Path) -> None:
    path = write(tmp_path / "note.json", json.dumps(note_fixture()))
    ((_, key, value),) = load_fixtures(path)

    # What the upload worker does with the message: decode it, accept it, key what it emits.
    event = SourceUploaded.model_validate_json(value)
    emitted = await accept_upload(
        event, directory=_Directory(), storage=_NoStorage(), limits=Limits(max_note_chars=2_000_000)
    )

    assert key == event.key()
    assert {e.key() for e in emitted} == {key}
    assert key != note_fixture()["event_id"].encode()


def status_report() -> dict[str, Any]:
    def stage(
        name: str, status: str, done: int, total: int | None, unit: str | None, **extra: Any
    ) -> dict[str, Any]:
        return {
            "stage": name,
            "status": status,
            "attempts": extra.get("attempts", 1),
            "units_done": done,
            "units_total": total,
            "unit": unit,
            "enqueued_at": "2024-09-12T14:06:03+00:00",
            "started_at": "2024-09-12T14:06:04+00:00",
            "finished_at": None,
            "heartbeat_at": None,
            "error_code": extra.get("error_code"),
            "error_message": extra.get("error_message"),
        }

    return {
        "sources": [
            {
                "source_id": ROW_ID,
                "kind": "audio",
                "content_type": "transcripts",
                "user_id": USER,
                "class_id": CLASS,
                "title": "Week 2 lecture recording",
                "status": "completed",
                "stage": "indexing",
                "attempts": 1,
                "chunk_count": 37,
                "error_code": None,
                "error_message": None,
                "updated_at": "2024-09-12T14:19:55+00:00",
                "stages": [
                    stage("upload", "done", 0, None, None),
                    stage("transcription", "done", 2893, 2893, "seconds"),
                    stage("embedding", "done", 37, 37, "chunks"),
                    stage("indexing", "done", 37, None, "chunks"),
                ],
            },
            {
                "source_id": "5d2c1b0a-9f8e-4d7c-b6a5-4f3e2d1c0b9a",
                "kind": "textbook",
                "content_type": "textbooks",
                "user_id": USER,
                "class_id": CLASS,
                "title": "Campbell Biology ch. 9",
                "status": "failed",
                "stage": "chunking",
                "attempts": 3,
                "chunk_count": None,
                "error_code": "corrupt_file",
                "error_message": "the PDF could not be read: EOF marker not found",
                "updated_at": "2024-09-12T14:08:12+00:00",
                "stages": [
                    stage(
                        "chunking",
                        "failed",
                        0,
                        None,
                        "pages",
                        attempts=3,
                        error_code="corrupt_file",
                        error_message="the PDF could not be read: EOF marker not found",
                    )
                ],
            },
        ],
        "rejections": [
            {
                "consumer": "upload",
                "topic": topics.SOURCE_UPLOADED,
                "key": "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d",
                "event_id": None,
                "error_code": "invalid_event",
                "error_message": "a note upload needs its text (or the id of an existing note row)",
                "received_at": "2024-09-12T14:07:30.412000+00:00",
            }
        ],
    }


def test_render_status_shows_sources_stages_failures_and_rejections() -> None:
    out = render_status(status_report())
    lines = out.splitlines()

    (done,) = [line for line in lines if line.startswith(ROW_ID)]
    assert "completed" in done
    assert "37" in done
    assert "Week 2 lecture recording" in done
    (failed,) = [line for line in lines if line.startswith("5d2c1b0a-9f8e-4d7c-b6a5-4f3e2d1c0b9a")]
    assert "failed" in failed
    assert "corrupt_file: the PDF could not be read: EOF marker not found" in failed
    assert any("transcription" in line and "2893/2893 seconds" in line for line in lines)
    assert any("indexing" in line and "37/? chunks" in line for line in lines)
    assert any("chunking" in line and "attempts 3" in line for line in lines)
    assert "REJECTED MESSAGES" in out
    (rejection,) = [line for line in lines if "invalid_event" in line]
    assert "a note upload needs its text" in rejection
    assert "2024-09-12T14:07:30" in rejection
    assert "upload" in rejection


def test_render_status_of_nothing_is_just_the_header() -> None:
    out = render_status({"sources": [], "rejections": []})
    assert len(out.splitlines()) == 1
    assert "REJECTED" not in out


def test_a_stage_without_a_heartbeat_for_too_long_is_stalled() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.db.jobs import StageRow, stage_state

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def stage(status: str, beat_ago: float | None) -> StageRow:
        beat = None if beat_ago is None else now - timedelta(seconds=beat_ago)
        return StageRow(
            stage="transcription",
            status=status,
            attempts=1,
            units_done=600,
            units_total=3600,
            unit="seconds",
            enqueued_at=now - timedelta(hours=1),
            started_at=now - timedelta(minutes=50),
            finished_at=None,
            heartbeat_at=beat,
            error_code=None,
            error_message=None,
        )

    assert stage_state(stage("processing", 30), now=now, stall_seconds=300) == "working"
    assert stage_state(stage("processing", 301), now=now, stall_seconds=300) == "stalled"
    assert (
        stage_state(stage("processing", None), now=now, stall_seconds=300) == "stalled"
    )  # started 50 min ago
    assert stage_state(stage("pending", None), now=now, stall_seconds=300) == "waiting"
    assert stage_state(stage("completed", 9999), now=now, stall_seconds=300) == "done"
    assert stage_state(stage("failed", 9999), now=now, stall_seconds=300) == "failed"
