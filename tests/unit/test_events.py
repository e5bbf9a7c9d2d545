"""The event contract: envelope rules, source ids, keys, derived ids, vector encoding, JSON round trips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.events.models import (
    EVENT_MODELS,
    UPLOAD_NAMESPACE,
    AudioPieceQueued,
    AudioUploaded,
    ChunksEmbedded,
    ContentReuseQueued,
    EmbeddedChunk,
    Envelope,
    PhotoUploaded,
    SourceDeleted,
    SourceFailed,
    SourceIndexed,
    SourceRef,
    SourceReprocessRequested,
    SourceUploaded,
    TextbookPagesQueued,
    TextbookUploaded,
    TextExtracted,
    TextSegment,
    decode_vector,
    encode_vector,
)

USER = uuid.UUID("7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44")
CLASS = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
JOB = uuid.UUID("1d6c9b0e-8f2a-4a5b-9e3c-4b7d2f1a0c98")
UPLOAD_ID = uuid.UUID("9b3f6a2e-4c1d-4e8f-a7b6-0d5c3e2f1a90")
ROW_ID = uuid.UUID("6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c")
AT = datetime(2024, 9, 12, 14, 6, 2, 125000, tzinfo=UTC)
NOTE = "A function is continuous at a if the limit of f(x) as x approaches a equals f(a)."


def upload(**overrides: Any) -> SourceUploaded:
    fields: dict[str, Any] = {
        "event_id": UPLOAD_ID,
        "correlation_id": JOB,
        "producer": "backend",
        "occurred_at": AT,
        "kind": "note",
        "user_id": USER,
        "class_id": CLASS,
        "title": "Lecture 3: Derivatives",
        "text": NOTE,
    }
    return SourceUploaded(**(fields | overrides))


REF = SourceRef(
    source_id=ROW_ID,
    kind="audio",
    user_id=USER,
    class_id=CLASS,
    title="Week 2 lecture recording",
    created_at=datetime(2024, 9, 12, 14, 5, 31, tzinfo=UTC),
)


def one_of_each() -> list[Envelope]:
    """A realistic instance of every enveloped event type."""
    up = upload(
        kind="audio",
        text=None,
        row_id=ROW_ID,
        storage_url=f"file:///srv/lmgpa/storage/{USER}/lecture2.m4a",
        media_type="audio/mp4",
        size_bytes=18_734_112,
        title="Week 2 lecture recording",
    )
    media = {
        "storage_url": f"file:///srv/lmgpa/storage/{USER}/lecture2.m4a",
        "media_type": "audio/mp4",
        "size_bytes": 18_734_112,
    }
    audio = AudioUploaded(**up.follow("AudioUploaded", producer="upload"), source=REF, **media)
    photo_ref = REF.model_copy(update={"kind": "photo", "title": "Whiteboard: Krebs cycle"})
    photo = PhotoUploaded(
        **up.follow("PhotoUploaded", producer="upload"),
        source=photo_ref,
        storage_url=f"file:///srv/lmgpa/storage/{USER}/krebs.jpg",
        media_type="image/jpeg",
        size_bytes=2_481_337,
    )
    book_ref = REF.model_copy(update={"kind": "textbook", "title": "Campbell Biology ch. 9"})
    book = TextbookUploaded(
        **up.follow("TextbookUploaded", producer="upload"),
        source=book_ref,
        storage_url=f"file:///srv/lmgpa/storage/{USER}/campbell-ch9.pdf",
        media_type="application/pdf",
        size_bytes=7_340_032,
    )
    reuse = ContentReuseQueued(
        **up.follow("ContentReuseQueued", producer="upload"),
        source=book_ref,
        storage_url=f"file:///srv/lmgpa/storage/{USER}/campbell-ch9-copy.pdf",
        media_type="application/pdf",
        size_bytes=7_340_032,
        content_sha256="3b" * 32,
        pipeline_version="9f" * 32,
    )
    text = TextExtracted(
        **audio.follow("TextExtracted/0", producer="transcription"),
        source=REF,
        segments=[
            TextSegment(
                text="Today we look at cellular respiration.",
                start_seconds=0.0,
                end_seconds=3.2,
                confidence=91.5,
            ),
            TextSegment(text="Glycolysis happens in the cytoplasm.", start_seconds=3.2, end_seconds=6.9),
        ],
        part_index=0,
        part_count=2,
    )
    embedded = ChunksEmbedded(
        **text.follow("ChunksEmbedded/0/0", producer="embedding"),
        source=REF,
        model="all-MiniLM-L6-v2",
        dimensions=4,
        part_index=0,
        part_count=2,
        batch_index=0,
        batch_count=1,
        chunks=[
            EmbeddedChunk(
                chunk_index=0,
                text="Today we look at cellular respiration. Glycolysis happens in the cytoplasm.",
                token_count=14,
                vector=encode_vector([0.5, -0.5, 0.5, -0.5]),
                start_seconds=0.0,
                end_seconds=6.9,
            )
        ],
    )
    indexed = SourceIndexed(
        **embedded.follow("SourceIndexed", producer="indexing"),
        source=REF,
        chunk_count=1,
        vector_id=REF.vector_id,
        qdrant_collection="lmgpa_chunks",
        chroma_collection=f"{USER}_{CLASS}_transcripts",
    )
    failed = SourceFailed(
        **text.follow("SourceFailed", producer="embedding"),
        source_id=ROW_ID,
        source=REF,
        stage="embedding",
        error_code="too_large",
        reason="part 0 has 100000 chunks",
    )
    piece = AudioPieceQueued(
        **audio.follow("AudioPieceQueued/1", producer="transcription"),
        source=REF,
        storage_url=media["storage_url"],
        duration_seconds=3012.4,
        piece_index=1,
        piece_count=5,
        start_seconds=598.7,
        end_seconds=1203.1,
        channels=[0, 1],
    )
    pages = TextbookPagesQueued(
        **book.follow("TextbookPagesQueued/3", producer="chunking"),
        source=book_ref,
        storage_url=f"file:///srv/lmgpa/storage/{USER}/campbell-ch9.pdf",
        page_count=412,
        range_index=3,
        range_count=17,
        first_page=76,
        last_page=100,
    )
    deleted = SourceDeleted(
        correlation_id=JOB, producer="backend", user_id=USER, class_id=CLASS, source_id=ROW_ID, kind="audio"
    )
    again = SourceReprocessRequested(
        correlation_id=JOB, producer="backend", source_id=ROW_ID, kind="audio", user_id=USER, class_id=CLASS
    )
    return [up, audio, photo, book, reuse, piece, pages, text, embedded, indexed, failed, deleted, again]


def test_one_of_each_covers_every_event_model() -> None:
    assert {type(e) for e in one_of_each()} == set(EVENT_MODELS)


def test_naive_occurred_at_is_refused() -> None:
    with pytest.raises(ValidationError):
        upload(occurred_at=datetime(2024, 9, 12, 14, 6, 2))


def test_aware_occurred_at_in_any_zone_is_accepted_and_default_is_utc() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert upload(occurred_at=datetime(2024, 9, 12, 9, 6, 2, tzinfo=eastern)).occurred_at == datetime(
        2024, 9, 12, 14, 6, 2, tzinfo=UTC
    )
    fresh = SourceUploaded(
        correlation_id=JOB,
        producer="backend",
        kind="note",
        user_id=USER,
        class_id=CLASS,
        title="T",
        text=NOTE,
    )
    assert fresh.occurred_at.utcoffset() == timedelta(0)


def test_naive_timestamp_in_json_is_refused() -> None:
    raw = upload().model_dump_json().replace("2024-09-12T14:06:02.125000Z", "2024-09-12T14:06:02.125000")
    assert '14:06:02.125000"' in raw
    with pytest.raises(ValidationError):
        SourceUploaded.model_validate_json(raw)


def test_source_id_is_the_row_id_when_given() -> None:
    assert upload(row_id=ROW_ID).source_id == ROW_ID
    assert upload(row_id=ROW_ID, text=None).source_id == ROW_ID


def test_source_id_without_row_is_a_stable_uuid5_of_the_event_id() -> None:
    first = upload()
    again = upload()
    other = upload(event_id=uuid.UUID("2a7c5e3f-1b9d-4f6a-8e0c-3d4b5a6f7e81"))

    assert first.source_id == again.source_id
    assert first.source_id != other.source_id
    assert first.source_id != first.event_id
    assert first.source_id == uuid.uuid5(UPLOAD_NAMESPACE, str(UPLOAD_ID))
    assert first.source_id.version == 5
    decoded = SourceUploaded.model_validate_json(first.model_dump_json())
    assert decoded.source_id == first.source_id


def test_note_without_text_and_without_row_is_refused() -> None:
    with pytest.raises(ValidationError):
        upload(text=None)


def test_note_with_storage_url_is_refused() -> None:
    with pytest.raises(ValidationError):
        upload(storage_url=f"file:///srv/lmgpa/storage/{USER}/notes.txt")


@pytest.mark.parametrize("kind", ["audio", "photo", "textbook"])
@pytest.mark.parametrize("url", [None, ""])
def test_media_kind_without_storage_url_is_refused(kind: str, url: str | None) -> None:
    with pytest.raises(ValidationError):
        upload(kind=kind, text=None, storage_url=url)


@pytest.mark.parametrize("kind", ["video", "Note", "pdf", ""])
def test_unknown_kind_is_refused(kind: str) -> None:
    with pytest.raises(ValidationError):
        upload(kind=kind, text=None, storage_url=f"file:///srv/lmgpa/storage/{USER}/x.bin")


def test_unknown_field_is_refused() -> None:
    raw = upload().model_dump() | {"course_code": "MATH 101"}
    with pytest.raises(ValidationError):
        SourceUploaded.model_validate(raw)


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).__name__)
def test_key_is_the_source_id_for_every_event_type(event: Envelope) -> None:
    assert event.key() == str(ROW_ID).encode()


def test_source_failed_without_a_source_is_keyed_by_its_event_id() -> None:
    failed = SourceFailed(
        **upload().follow("SourceFailed", producer="upload"),
        source_id=None,
        stage="upload",
        error_code="invalid_event",
        reason="the message is not a valid SourceUploaded",
    )
    assert failed.key() == str(failed.event_id).encode()


def test_key_of_upload_without_row_is_its_derived_source_id() -> None:
    event = upload()
    assert event.key() == str(event.source_id).encode()
    assert event.key() != str(event.event_id).encode()


def test_follow_ids_are_deterministic_per_parent_and_name() -> None:
    parent = upload()
    same_parent = upload()
    other_parent = upload(event_id=uuid.UUID("2a7c5e3f-1b9d-4f6a-8e0c-3d4b5a6f7e81"))

    a = parent.follow("TextExtracted/0", producer="upload")
    assert a["event_id"] == same_parent.follow("TextExtracted/0")["event_id"]
    assert a["event_id"] != parent.follow("TextExtracted/1")["event_id"]
    assert a["event_id"] != other_parent.follow("TextExtracted/0")["event_id"]
    assert a["event_id"] != parent.event_id
    assert a["correlation_id"] == JOB
    assert a["causation_id"] == parent.event_id
    assert a["producer"] == "upload"


def test_follow_keeps_the_correlation_along_a_chain() -> None:
    events = one_of_each()
    assert {e.correlation_id for e in events} == {JOB}
    by_id = {e.event_id: e for e in events}
    for e in events[1:]:
        if e.producer == "backend":
            continue  # the backend's own events (a delete) start a chain of their own
        assert e.causation_id in by_id


@given(st.lists(st.floats(width=32, allow_nan=False), max_size=400))
def test_vectors_round_trip_float32_exactly(values: list[float]) -> None:
    assert decode_vector(encode_vector(values)) == values
    assert decode_vector(encode_vector(np.asarray(values, dtype=np.float32))) == values


def test_vector_encoding_is_little_endian_float32_base64() -> None:
    encoded = encode_vector([1.0, -2.5])
    assert encoded == "AACAPwAAIMA="
    rng = np.random.default_rng(7)
    v = rng.standard_normal(384).astype(np.float32)
    v /= np.linalg.norm(v)
    assert decode_vector(encode_vector(v)) == v.tolist()
    assert len(encode_vector(v)) == 4 * ((384 * 4 + 2) // 3)


@pytest.mark.parametrize(("index", "count"), [(1, 1), (2, 1), (3, 2)])
def test_text_extracted_refuses_part_index_at_or_past_part_count(index: int, count: int) -> None:
    with pytest.raises(ValidationError):
        TextExtracted(
            correlation_id=JOB,
            producer="ocr",
            source=REF,
            segments=[TextSegment(text="Mitochondria are the powerhouse of the cell.")],
            part_index=index,
            part_count=count,
        )


def test_text_extracted_accepts_the_last_part() -> None:
    event = TextExtracted(
        correlation_id=JOB,
        producer="ocr",
        source=REF,
        segments=[TextSegment(text="Mitochondria are the powerhouse of the cell.")],
        part_index=1,
        part_count=2,
    )
    assert event.part_index == 1


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).__name__)
def test_json_round_trip_of_every_event_type(event: Envelope) -> None:
    raw = event.model_dump_json()
    decoded = type(event).model_validate_json(raw)
    assert decoded == event
    assert decoded.model_dump_json() == raw
    assert decoded.event_type == type(event).__name__
    assert decoded.occurred_at.tzinfo is not None


@pytest.mark.parametrize("event", one_of_each(), ids=lambda e: type(e).__name__)
def test_event_of_one_type_does_not_validate_as_another(event: Envelope) -> None:
    raw = event.model_dump_json()
    for model in EVENT_MODELS:
        if model is not type(event):
            with pytest.raises(ValidationError):
                model.model_validate_json(raw)
