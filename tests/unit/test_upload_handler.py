"""accept_upload with in-memory fakes of the Directory and Storage ports."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.upload.handlers import ContentKey, Limits, accept_upload
from shared.errors import PermanentError
from shared.events.models import (
    AudioUploaded,
    ContentReuseQueued,
    PhotoUploaded,
    SourceUploaded,
    TextbookUploaded,
    TextExtracted,
)
from shared.events.parts import MAX_PART_CHARS
from shared.ports import SourceRow
from shared.storage import StoredFile
from shared.text import decode_note
from tests.media.documents import docx, png, random_bytes

USER = uuid.UUID("7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44")
OTHER_USER = uuid.UUID("e2b0c9a1-6d3f-4c8b-8a71-5f0d9e3c2b17")
CLASS = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
OTHER_CLASS = uuid.UUID("a9d4e1c7-2f6b-4b3e-9c05-7e8d1a2b3c4f")
FOREIGN_CLASS = uuid.UUID("5b2e8f1d-9a4c-4e7b-b6d3-0c1f2e3a4b5d")
UNKNOWN_CLASS = uuid.UUID("00d1c2b3-a4f5-4e6d-8c7b-9a0b1c2d3e4f")
JOB = uuid.UUID("1d6c9b0e-8f2a-4a5b-9e3c-4b7d2f1a0c98")
ROW_CREATED = datetime(2024, 9, 12, 14, 5, 31, tzinfo=UTC)
UPLOADED_AT = datetime(2024, 9, 12, 14, 6, 2, tzinfo=UTC)

NOTE_TEXT = (
    "The derivative of f at a measures the instantaneous rate of change of f near a. "
    "Formally, f'(a) is the limit of (f(a + h) - f(a)) / h as h approaches zero, when that limit exists. "
    "The power rule gives d/dx x^n = n x^(n-1); the chain rule gives (f o g)' = (f' o g) g'."
)
LIMITS = Limits(max_note_chars=2_000_000)


@dataclass
class FakeDirectory:
    """Classes and rows in dicts; records every accept call."""

    owners: dict[uuid.UUID, uuid.UUID] = field(
        default_factory=lambda: {CLASS: USER, OTHER_CLASS: USER, FOREIGN_CLASS: OTHER_USER}
    )
    rows: dict[tuple[str, uuid.UUID], SourceRow] = field(default_factory=dict)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    deleted: set[uuid.UUID] = field(default_factory=set)

    async def class_owner(self, class_id: uuid.UUID) -> uuid.UUID | None:
        return self.owners.get(class_id)

    async def find_source(self, kind: str, source_id: uuid.UUID) -> SourceRow | None:
        return self.rows.get((kind, source_id))

    async def is_deleted(self, *, user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID) -> bool:
        return bool({user_id, class_id, source_id} & self.deleted)

    donors: set[tuple[str, str, str]] = field(default_factory=set)
    """(kind, sha256, pipeline version) of completed sources."""

    async def has_donor(self, kind: str, key: ContentKey, *, exclude: uuid.UUID) -> bool:
        return (kind, key.sha256, key.pipeline_version) in self.donors

    async def accept(
        self,
        event: SourceUploaded,
        *,
        text: str | None,
        stored: StoredFile | None,
        next_stage: str,
        content_key: ContentKey | None = None,
    ) -> SourceRow:
        self.accepted.append(
            {"event": event, "text": text, "stored": stored, "next_stage": next_stage, "key": content_key}
        )
        row = self.rows.get((event.kind, event.source_id))
        if row is None:
            row = SourceRow(
                source_id=event.source_id,
                kind=event.kind,
                user_id=event.user_id,
                class_id=event.class_id,
                title=event.title,
                created_at=ROW_CREATED,
                text=text,
                vector_id=None,
            )
            self.rows[(event.kind, event.source_id)] = row
        return row


@dataclass
class FakeStorage:
    """Knows a few URLs; refuses everything else like LocalStorage does."""

    files: dict[str, StoredFile] = field(default_factory=dict)
    resolved: list[str] = field(default_factory=list)

    def resolve(self, url: str) -> StoredFile:
        self.resolved.append(url)
        if url not in self.files:
            raise PermanentError("storage_url_refused", f"not an allowed storage URL: {url}")
        return self.files[url]


def note_upload(**overrides: Any) -> SourceUploaded:
    fields: dict[str, Any] = {
        "event_id": uuid.UUID("9b3f6a2e-4c1d-4e8f-a7b6-0d5c3e2f1a90"),
        "correlation_id": JOB,
        "producer": "backend",
        "occurred_at": UPLOADED_AT,
        "kind": "note",
        "user_id": USER,
        "class_id": CLASS,
        "title": "Lecture 3: Derivatives",
        "text": NOTE_TEXT,
        "note_type": "lecture",
    }
    return SourceUploaded(**(fields | overrides))


MEDIA = {
    "audio": ("lecture3.m4a", "audio/mp4", 18_734_112, AudioUploaded, "transcription"),
    "photo": ("whiteboard-krebs-cycle.jpg", "image/jpeg", 2_481_337, PhotoUploaded, "ocr"),
    "textbook": ("campbell-biology-ch9.pdf", "application/pdf", 7_340_032, TextbookUploaded, "chunking"),
}


def media_upload(kind: str, **overrides: Any) -> tuple[SourceUploaded, FakeStorage]:
    name, media_type, size, _, _ = MEDIA[kind]
    relative = f"{USER}/{name}"
    resolved = f"file:///srv/lmgpa/storage/{USER}/{name}"
    storage = FakeStorage(
        {relative: StoredFile(url=resolved, path=Path(f"/srv/lmgpa/storage/{USER}/{name}"), size_bytes=size)}
    )
    fields: dict[str, Any] = {
        "event_id": uuid.UUID("c4e2a1b0-7d6f-4a3e-8b9c-1f0e2d3c4b5a"),
        "correlation_id": JOB,
        "producer": "backend",
        "occurred_at": UPLOADED_AT,
        "kind": kind,
        "user_id": USER,
        "class_id": CLASS,
        "title": "Cellular respiration",
        "storage_url": relative,
        "media_type": media_type,
    }
    return SourceUploaded(**(fields | overrides)), storage


async def test_note_for_own_class_emits_one_text_extracted() -> None:
    event = note_upload()
    directory = FakeDirectory()

    out = await accept_upload(event, directory=directory, storage=FakeStorage(), limits=LIMITS)

    assert len(out) == 1
    (extracted,) = out
    assert isinstance(extracted, TextExtracted)
    assert extracted.source.content_type == "notes"
    assert extracted.source.kind == "note"
    assert extracted.source.source_id == event.source_id
    assert extracted.source.user_id == USER
    assert extracted.source.class_id == CLASS
    assert extracted.source.title == "Lecture 3: Derivatives"
    assert extracted.source.created_at == ROW_CREATED
    assert [s.text for s in extracted.segments] == [NOTE_TEXT]
    assert (extracted.part_index, extracted.part_count) == (0, 1)
    assert extracted.correlation_id == JOB
    assert extracted.causation_id == event.event_id
    assert extracted.event_id != event.event_id
    assert extracted.producer == "upload"
    assert extracted.key() == event.key()


async def test_note_output_event_ids_are_deterministic() -> None:
    first = await accept_upload(
        note_upload(), directory=FakeDirectory(), storage=FakeStorage(), limits=LIMITS
    )
    again = await accept_upload(
        note_upload(), directory=FakeDirectory(), storage=FakeStorage(), limits=LIMITS
    )
    other = await accept_upload(
        note_upload(event_id=uuid.UUID("2a7c5e3f-1b9d-4f6a-8e0c-3d4b5a6f7e81")),
        directory=FakeDirectory(),
        storage=FakeStorage(),
        limits=LIMITS,
    )

    assert [e.event_id for e in first] == [e.event_id for e in again]
    assert {e.event_id for e in first}.isdisjoint(e.event_id for e in other)


async def test_existing_row_gives_title_created_at_and_text() -> None:
    row_id = uuid.UUID("6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c")
    created = datetime(2024, 9, 1, 8, 30, tzinfo=UTC)
    row = SourceRow(
        source_id=row_id,
        kind="note",
        user_id=USER,
        class_id=CLASS,
        title="Week 1 notes: Limits and continuity",
        created_at=created,
        text=NOTE_TEXT,
        vector_id=None,
    )
    directory = FakeDirectory(rows={("note", row_id): row})
    event = note_upload(row_id=row_id, text=None)

    (extracted,) = await accept_upload(event, directory=directory, storage=FakeStorage(), limits=LIMITS)

    assert isinstance(extracted, TextExtracted)
    assert extracted.source.source_id == row_id
    assert extracted.source.title == "Week 1 notes: Limits and continuity"
    assert extracted.source.created_at == created
    assert "".join(s.text for s in extracted.segments) == NOTE_TEXT
    assert directory.accepted[0]["text"] == NOTE_TEXT


def refusal_cases() -> list[Any]:
    row_id = uuid.UUID("6e5d4c3b-2a19-4f8e-9d7c-6b5a4f3e2d1c")

    def row(user: uuid.UUID, klass: uuid.UUID) -> dict[tuple[str, uuid.UUID], SourceRow]:
        return {
            ("note", row_id): SourceRow(
                source_id=row_id,
                kind="note",
                user_id=user,
                class_id=klass,
                title="Someone else's notes",
                created_at=ROW_CREATED,
                text=NOTE_TEXT,
                vector_id=None,
            )
        }

    return [
        pytest.param(note_upload(class_id=UNKNOWN_CLASS), {}, "unknown_class", id="unknown_class"),
        pytest.param(note_upload(class_id=FOREIGN_CLASS), {}, "class_not_owned", id="class_not_owned"),
        pytest.param(note_upload(row_id=row_id), {}, "unknown_row", id="unknown_row"),
        pytest.param(
            note_upload(row_id=row_id), row(OTHER_USER, CLASS), "row_not_owned", id="row_of_other_user"
        ),
        pytest.param(
            note_upload(row_id=row_id), row(USER, OTHER_CLASS), "row_not_owned", id="row_of_other_class"
        ),
        pytest.param(note_upload(text="  \n\t \n  "), {}, "empty_text", id="whitespace_note"),
        pytest.param(note_upload(text=""), {}, "empty_text", id="empty_note"),
        # What a backend sends when it reads a Word file or a photo as if it were a note.
        pytest.param(note_upload(text=decode_note(docx())), {}, "not_text", id="docx_as_note"),
        pytest.param(note_upload(text=decode_note(png())), {}, "not_text", id="png_as_note"),
        pytest.param(note_upload(text=decode_note(random_bytes(3000))), {}, "not_text", id="random_bytes"),
        pytest.param(note_upload(text="Lecture 3\x00\x00\x00" + NOTE_TEXT), {}, "not_text", id="nul_bytes"),
    ]


@pytest.mark.parametrize(("event", "rows", "code"), refusal_cases())
async def test_refused_uploads(event: SourceUploaded, rows: dict[Any, SourceRow], code: str) -> None:
    directory = FakeDirectory(rows=dict(rows))

    with pytest.raises(PermanentError) as refused:
        await accept_upload(event, directory=directory, storage=FakeStorage(), limits=LIMITS)

    assert refused.value.code == code
    assert refused.value.reason
    assert directory.accepted == []


async def test_a_binary_note_is_refused_with_a_reason_that_says_what_it_looks_like() -> None:
    directory = FakeDirectory()

    with pytest.raises(PermanentError) as refused:
        await accept_upload(
            note_upload(text=decode_note(docx())), directory=directory, storage=FakeStorage(), limits=LIMITS
        )

    assert refused.value.code == "not_text"
    assert "not text" in refused.value.reason and "ZIP archive" in refused.value.reason
    assert directory.accepted == []


async def test_real_text_with_accents_emoji_tabs_and_newlines_is_accepted_as_it_is() -> None:
    text = (
        "Le cycle de Krebs 🧬\n\tétape 1 — citrate → isocitrate\r\nΔG ≈ \u22122870 kJ/mol; 日本語のメモ\n"
        * 20
    )
    directory = FakeDirectory()

    out = await accept_upload(
        note_upload(text=text), directory=directory, storage=FakeStorage(), limits=LIMITS
    )

    [extracted] = out
    assert isinstance(extracted, TextExtracted)
    assert "".join(s.text for s in extracted.segments) == text == directory.accepted[0]["text"]


async def test_note_over_the_limit_is_too_large_and_at_the_limit_is_accepted() -> None:
    limits = Limits(max_note_chars=len(NOTE_TEXT))
    directory = FakeDirectory()

    out = await accept_upload(note_upload(), directory=directory, storage=FakeStorage(), limits=limits)
    assert len(out) == 1

    refused_directory = FakeDirectory()
    with pytest.raises(PermanentError) as refused:
        await accept_upload(
            note_upload(text=NOTE_TEXT + "!"),
            directory=refused_directory,
            storage=FakeStorage(),
            limits=limits,
        )
    assert refused.value.code == "too_large"
    assert refused_directory.accepted == []


async def test_long_note_is_split_into_ordered_parts() -> None:
    paragraph = (
        "Mitochondria oxidise pyruvate in the citric acid cycle, reducing NAD+ to NADH. "
        "The electron transport chain pumps protons across the inner membrane, "
        "and ATP synthase uses the gradient to phosphorylate ADP.\n\n"
    )
    text = (paragraph * (MAX_PART_CHARS * 2 // len(paragraph) + 7)).strip()
    assert len(text) > 2 * MAX_PART_CHARS
    event = note_upload(text=text, title="Biology 101: Cellular respiration (full notes)")

    out = await accept_upload(event, directory=FakeDirectory(), storage=FakeStorage(), limits=LIMITS)

    assert len(out) >= 3
    assert all(isinstance(e, TextExtracted) for e in out)
    extracted = [e for e in out if isinstance(e, TextExtracted)]
    n = len(extracted)
    assert [e.part_index for e in extracted] == list(range(n))
    assert {e.part_count for e in extracted} == {n}
    assert "".join(s.text for e in extracted for s in e.segments) == text
    assert all(sum(len(s.text) for s in e.segments) <= MAX_PART_CHARS for e in extracted)
    assert len({e.event_id for e in extracted}) == n
    assert {e.source.source_id for e in extracted} == {event.source_id}
    assert {e.causation_id for e in extracted} == {event.event_id}


@pytest.mark.parametrize("kind", ["audio", "photo", "textbook"])
async def test_media_upload_emits_its_kind_event_with_resolved_url_and_size(kind: str) -> None:
    name, media_type, size, event_type, next_stage = MEDIA[kind]
    event, storage = media_upload(kind)
    directory = FakeDirectory()

    out = await accept_upload(event, directory=directory, storage=storage, limits=LIMITS)

    assert len(out) == 1
    (media,) = out
    assert type(media) is event_type
    assert isinstance(media, AudioUploaded | PhotoUploaded | TextbookUploaded)
    assert media.storage_url == f"file:///srv/lmgpa/storage/{USER}/{name}"
    assert media.size_bytes == size
    assert media.media_type == media_type
    assert media.source.source_id == event.source_id
    assert media.source.kind == kind
    assert media.source.created_at == ROW_CREATED
    assert media.correlation_id == JOB
    assert media.causation_id == event.event_id
    assert storage.resolved == [event.storage_url]
    (call,) = directory.accepted
    assert call["next_stage"] == next_stage
    assert call["text"] is None
    assert call["stored"] == storage.files[event.storage_url]

    again, _ = media_upload(kind)
    (replayed,) = await accept_upload(again, directory=FakeDirectory(), storage=storage, limits=LIMITS)
    assert replayed.event_id == media.event_id


async def test_note_accept_is_called_with_embedding_stage_and_text() -> None:
    directory = FakeDirectory()
    storage = FakeStorage()

    await accept_upload(note_upload(), directory=directory, storage=storage, limits=LIMITS)

    (call,) = directory.accepted
    assert call["next_stage"] == "embedding"
    assert call["text"] == NOTE_TEXT
    assert call["stored"] is None
    assert storage.resolved == []


async def test_storage_refusal_propagates_and_nothing_is_accepted() -> None:
    event, storage = media_upload("audio", storage_url="file:///etc/shadow")
    directory = FakeDirectory()

    with pytest.raises(PermanentError) as refused:
        await accept_upload(event, directory=directory, storage=storage, limits=LIMITS)

    assert refused.value.code == "storage_url_refused"
    assert directory.accepted == []


async def test_zero_byte_file_is_refused_as_empty() -> None:
    event, storage = media_upload("photo")
    url = event.storage_url
    assert url is not None
    storage.files[url] = StoredFile(url=storage.files[url].url, path=storage.files[url].path, size_bytes=0)
    directory = FakeDirectory()

    with pytest.raises(PermanentError) as refused:
        await accept_upload(event, directory=directory, storage=storage, limits=LIMITS)

    assert refused.value.code == "empty_file"
    assert directory.accepted == []


async def test_media_for_class_of_another_user_is_refused_before_touching_storage() -> None:
    event, storage = media_upload("textbook", class_id=FOREIGN_CLASS)
    directory = FakeDirectory()

    with pytest.raises(PermanentError) as refused:
        await accept_upload(event, directory=directory, storage=storage, limits=LIMITS)

    assert refused.value.code == "class_not_owned"
    assert storage.resolved == []
    assert directory.accepted == []


async def test_an_upload_of_a_deleted_source_class_or_user_is_refused() -> None:
    for gone in ("source", "class", "user"):
        directory, storage = FakeDirectory(), FakeStorage()
        event = note_upload()
        directory.owners[event.class_id] = event.user_id
        directory.deleted = {
            {"source": event.source_id, "class": event.class_id, "user": event.user_id}[gone]
        }
        with pytest.raises(PermanentError) as failure:
            await accept_upload(event, directory=directory, storage=storage, limits=LIMITS)
        assert failure.value.code == "deleted" and not directory.accepted


class FakeFingerprints:
    """A fixed content key per file path; records what it was asked."""

    def __init__(self, version: str = "a" * 64) -> None:
        self.version = version
        self.asked: list[tuple[Path, str]] = []

    async def content_key(self, stored: StoredFile, kind: str) -> ContentKey:
        self.asked.append((stored.path, kind))
        return ContentKey(
            sha256=hashlib.sha256(str(stored.path).encode()).hexdigest(), pipeline_version=self.version
        )


@pytest.mark.parametrize("kind", ["audio", "photo", "textbook"])
async def test_an_upload_with_a_completed_identical_source_is_sent_to_reuse(kind: str) -> None:
    _, _, size, _, normal_stage = MEDIA[kind]
    event, storage = media_upload(kind)
    fingerprints = FakeFingerprints()
    key = await fingerprints.content_key(storage.files[event.storage_url or ""], kind)
    directory = FakeDirectory(donors={(kind, key.sha256, key.pipeline_version)})

    (out,) = await accept_upload(
        event, directory=directory, storage=storage, limits=LIMITS, fingerprints=fingerprints
    )

    assert isinstance(out, ContentReuseQueued)
    assert (out.content_sha256, out.pipeline_version) == (key.sha256, key.pipeline_version)
    assert out.source.source_id == event.source_id and out.source.user_id == USER
    assert out.size_bytes == size
    (call,) = directory.accepted
    assert call["next_stage"] == "indexing" != normal_stage
    assert call["key"] == key


@pytest.mark.parametrize(
    ("donor_kind", "donor_version", "reuse"),
    [
        ("photo", "a" * 64, True),  # another kind's result of the same bytes is never served
        ("textbook", "b" * 64, True),  # made under other settings
        ("textbook", "a" * 64, False),  # reuse turned off
    ],
)
async def test_no_reuse_without_a_donor_of_the_same_kind_and_version_or_when_turned_off(
    donor_kind: str, donor_version: str, reuse: bool
) -> None:
    event, storage = media_upload("textbook")
    fingerprints = FakeFingerprints()
    key = await fingerprints.content_key(storage.files[event.storage_url or ""], "textbook")
    directory = FakeDirectory(donors={(donor_kind, key.sha256, donor_version)})
    limits = Limits(max_note_chars=2_000_000, reuse=reuse)

    (out,) = await accept_upload(
        event, directory=directory, storage=storage, limits=limits, fingerprints=fingerprints
    )

    assert type(out) is TextbookUploaded
    (call,) = directory.accepted
    assert call["next_stage"] == "chunking"
    assert call["key"] == key, "the key is kept either way, so this source can be a donor later"
