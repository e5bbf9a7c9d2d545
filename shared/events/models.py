"""The event contract: one pydantic model per event, all sharing one envelope."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.events import topics

SourceKind = Literal["audio", "photo", "textbook", "note"]
ContentType = Literal["transcripts", "photos", "textbooks", "notes"]

CONTENT_TYPE_OF_KIND: dict[str, ContentType] = {
    "audio": "transcripts",
    "photo": "photos",
    "textbook": "textbooks",
    "note": "notes",
}
"""The design's vector content types (Chroma collection suffixes) by upload kind."""

DOCUMENT_PREFIX_OF_KIND: dict[str, str] = {
    "audio": "recording",
    "photo": "photo",
    "textbook": "textbook",
    "note": "note",
}
"""Prefix of the design's document ids (``recording_<id>``) by upload kind."""

SCHEMA_VERSION = 1
MAX_INLINE_TEXT_BYTES = 512_000
"""A note's text travels inside the upload event only up to this size (the broker's limit is 1 MB);
a longer note is inserted by the backend and named by row_id, and the upload worker reads it from its row."""
UPLOAD_NAMESPACE = uuid.UUID("6f1d2c2e-5c0a-4c8e-9a55-1b7b3e0c2a10")
"""Namespace of source ids derived from upload event ids, so a replayed upload reuses its row."""


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields every event carries, whatever its type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TOPIC: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id of this event.")
    event_type: str = Field(description="The event's name; fixed per model.")
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, description="Version of this event's schema.")
    occurred_at: AwareDatetime = Field(default_factory=utc_now, description="When it happened (UTC).")
    correlation_id: uuid.UUID = Field(
        description="The ingestion job: the upload event's id, unchanged along the whole chain."
    )
    causation_id: uuid.UUID | None = Field(
        default=None, description="The event that caused this one (none for the upload event)."
    )
    producer: str = Field(
        max_length=100, description="Who published it: a service name or the backend.", examples=["upload"]
    )
    traceparent: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        description=(
            "W3C trace context of the span that published it (as in the Kafka `traceparent` header), kept in the "
            "event so that a re-drive from the outbox continues the upload's trace. Absent when nothing traces."
        ),
    )

    def key(self) -> bytes:
        """The Kafka message key: the source id, so one source's events stay in order."""
        raise NotImplementedError

    def follow(self, name: str, **fields: Any) -> dict[str, Any]:
        """Envelope fields for an event caused by this one; ``name`` makes its id deterministic, so a
        handler that runs again for the same event emits the same event ids (and consumers skip them)."""
        return {
            "event_id": uuid.uuid5(self.event_id, name),
            "correlation_id": self.correlation_id,
            "causation_id": self.event_id,
            **fields,
        }


class SourceRef(BaseModel):
    """Who owns a source and what it is: carried by every event after the upload."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_id: uuid.UUID = Field(description="Id of the source's row in its platform table.")
    kind: SourceKind = Field(description="Kind of upload.")
    user_id: uuid.UUID = Field(description="The student who owns it.")
    class_id: uuid.UUID = Field(description="The class it belongs to.")
    title: str = Field(max_length=200, description="Title shown to the student.")
    created_at: AwareDatetime = Field(description="When the source row was created.")
    generation: int = Field(
        default=0,
        ge=0,
        description="Which processing of the source this is: 0 first, +1 with every reprocess.",
    )

    @property
    def content_type(self) -> ContentType:
        """The design's vector content type of this source."""
        return CONTENT_TYPE_OF_KIND[self.kind]

    @property
    def vector_id(self) -> str:
        """The design's document id stem: chunks are ``<vector_id>_<chunk_index>``."""
        return f"{DOCUMENT_PREFIX_OF_KIND[self.kind]}_{self.source_id}"


class SourceUploaded(Envelope):
    """The backend's entry point: a student uploaded a recording, photo, textbook or note."""

    TOPIC: ClassVar[str] = topics.SOURCE_UPLOADED
    event_type: Literal["SourceUploaded"] = "SourceUploaded"

    kind: SourceKind = Field(description="What was uploaded.", examples=["note"])
    user_id: uuid.UUID = Field(description="The uploading student (users.id).")
    class_id: uuid.UUID = Field(description="The class it is for (classes.id); must belong to user_id.")
    title: str = Field(min_length=1, max_length=200, examples=["Lecture 3: Derivatives"])
    storage_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Where the file is (file:// URL or a path under the storage root). Required but for notes.",
        examples=["file:///srv/lmgpa/storage/u1/lecture3.m4a"],
    )
    text: str | None = Field(
        default=None, description="The note's text (notes only; up to 512,000 UTF-8 bytes, else send row_id)."
    )
    row_id: uuid.UUID | None = Field(
        default=None,
        description="Id of the row if the backend already inserted it; it must match user and class.",
    )
    media_type: str | None = Field(default=None, max_length=100, examples=["audio/mp4", "application/pdf"])
    size_bytes: int | None = Field(default=None, ge=0)
    note_type: str | None = Field(
        default=None, max_length=50, description="notes.note_type", examples=["lecture"]
    )
    author: str | None = Field(default=None, max_length=200, description="textbook_downloads.author")
    isbn: str | None = Field(default=None, max_length=20, description="textbook_downloads.isbn")

    @model_validator(mode="after")
    def _payload_matches_kind(self) -> SourceUploaded:
        if self.kind == "note":
            if self.text is None and self.row_id is None:
                raise ValueError("a note upload needs its text (or the id of an existing note row)")
            if self.storage_url is not None:
                raise ValueError("a note upload carries text, not a storage_url")
            if self.text is not None and len(self.text.encode("utf-8")) > MAX_INLINE_TEXT_BYTES:
                raise ValueError(
                    f"note text over {MAX_INLINE_TEXT_BYTES} bytes: insert the notes row and send its row_id instead"
                )
        elif not self.storage_url:
            raise ValueError(f"a {self.kind} upload needs a storage_url")
        return self

    @property
    def source_id(self) -> uuid.UUID:
        """The row id: the backend's, or one derived from this event so a replay reuses it."""
        return self.row_id or uuid.uuid5(UPLOAD_NAMESPACE, str(self.event_id))

    def key(self) -> bytes:
        """The Kafka key: the source id."""
        return str(self.source_id).encode()


class _SourceEvent(Envelope):
    source: SourceRef = Field(description="The source this event is about.")

    def key(self) -> bytes:
        """The Kafka key: the source id."""
        return str(self.source.source_id).encode()


class _MediaUploaded(_SourceEvent):
    storage_url: str = Field(max_length=2048, description="Where the file is.")
    media_type: str | None = Field(default=None, max_length=100)
    size_bytes: int | None = Field(default=None, ge=0)


class AudioUploaded(_MediaUploaded):
    """An accepted lecture recording, waiting for transcription."""

    TOPIC: ClassVar[str] = topics.AUDIO_UPLOADED
    event_type: Literal["AudioUploaded"] = "AudioUploaded"


class PhotoUploaded(_MediaUploaded):
    """An accepted photo of notes or a whiteboard, waiting for OCR."""

    TOPIC: ClassVar[str] = topics.PHOTO_UPLOADED
    event_type: Literal["PhotoUploaded"] = "PhotoUploaded"


class TextbookUploaded(_MediaUploaded):
    """An accepted textbook file, waiting for page extraction and chunking."""

    TOPIC: ClassVar[str] = topics.TEXTBOOK_UPLOADED
    event_type: Literal["TextbookUploaded"] = "TextbookUploaded"


class ContentReuseQueued(_MediaUploaded):
    """An accepted upload whose bytes a completed source has, under the same pipeline version: the indexing
    worker copies that source's vectors and rows under this one's ids, or falls back to the kind's normal path."""

    TOPIC: ClassVar[str] = topics.CONTENT_REUSE
    event_type: Literal["ContentReuseQueued"] = "ContentReuseQueued"

    content_sha256: str = Field(pattern="^[0-9a-f]{64}$", description="SHA-256 of the uploaded file.")
    pipeline_version: str = Field(
        pattern="^[0-9a-f]{64}$", description="Digest of every setting the results depend on."
    )


class AudioPieceQueued(_SourceEvent):
    """One span of a recording for any transcription replica: cut at a quiet moment, never mid-word."""

    TOPIC: ClassVar[str] = topics.AUDIO_PIECES
    event_type: Literal["AudioPieceQueued"] = "AudioPieceQueued"

    storage_url: str = Field(max_length=2048)
    duration_seconds: float = Field(ge=0, description="Length of the whole recording.")
    piece_index: int = Field(ge=0)
    piece_count: int = Field(ge=1)
    start_seconds: float = Field(ge=0)
    end_seconds: float = Field(ge=0)
    channels: list[int] | None = Field(
        default=None,
        description="Channels to transcribe one by one (they carry different speakers); None: mix them.",
    )


class TextbookPagesQueued(_SourceEvent):
    """One range of a book's pages for any chunking replica."""

    TOPIC: ClassVar[str] = topics.TEXTBOOK_PAGES
    event_type: Literal["TextbookPagesQueued"] = "TextbookPagesQueued"

    storage_url: str = Field(max_length=2048)
    page_count: int = Field(ge=1, description="Pages in the whole book.")
    range_index: int = Field(ge=0)
    range_count: int = Field(ge=1)
    first_page: int = Field(ge=1, description="1-based, inclusive.")
    last_page: int = Field(ge=1, description="1-based, inclusive.")


class TextSegment(BaseModel):
    """A piece of a source's text with where it came from: a page, a time span, or the whole note."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(description="The text.")
    page: int | None = Field(default=None, ge=1, description="1-based page of a textbook.")
    start_seconds: float | None = Field(default=None, ge=0, description="Start in a recording.")
    end_seconds: float | None = Field(default=None, ge=0, description="End in a recording.")
    confidence: float | None = Field(
        default=None, ge=0, le=100, description="Mean OCR/ASR confidence, if known."
    )


class TextExtracted(_SourceEvent):
    """A source's text, ready to chunk and embed; large texts come in numbered parts."""

    TOPIC: ClassVar[str] = topics.TEXT_EXTRACTED
    event_type: Literal["TextExtracted"] = "TextExtracted"

    segments: list[TextSegment] = Field(description="The text, in order.")
    part_index: int = Field(default=0, ge=0, description="Which part of the source's text this is.")
    part_count: int = Field(default=1, ge=1, description="How many parts the source's text has.")

    @model_validator(mode="after")
    def _part_in_range(self) -> TextExtracted:
        if self.part_index >= self.part_count:
            raise ValueError("part_index must be below part_count")
        return self


def encode_vector(vector: np.ndarray[Any, Any] | list[float]) -> str:
    """A vector as base64 of little-endian float32: a quarter of the size of JSON numbers."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(encoded: str) -> list[float]:
    """The inverse of ``encode_vector``."""
    values: list[float] = np.frombuffer(base64.b64decode(encoded), dtype="<f4").astype(float).tolist()
    return values


class EmbeddedChunk(BaseModel):
    """One chunk of a source with its embedding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_index: int = Field(ge=0, description="Position of the chunk in its source; part of its vector ids.")
    text: str = Field(description="The chunk's text (the Chroma document).")
    token_count: int = Field(ge=0, description="Word pieces of the chunk for the embedding model.")
    vector: Annotated[str, Field(description="base64 of little-endian float32 values (see encode_vector).")]
    page_start: int | None = Field(default=None, ge=1)
    page_end: int | None = Field(default=None, ge=1)
    start_seconds: float | None = Field(default=None, ge=0)
    end_seconds: float | None = Field(default=None, ge=0)
    confidence: float | None = Field(
        default=None, ge=0, le=100, description="Lowest OCR/ASR confidence of the text it covers, if known."
    )


class ChunksEmbedded(_SourceEvent):
    """A batch of a source's chunks with their vectors, ready to index."""

    TOPIC: ClassVar[str] = topics.CHUNKS_EMBEDDED
    event_type: Literal["ChunksEmbedded"] = "ChunksEmbedded"

    model: str = Field(description="Embedding model name.", examples=["all-MiniLM-L6-v2"])
    dimensions: int = Field(ge=1, examples=[384])
    part_index: int = Field(ge=0, description="The TextExtracted part these chunks come from.")
    part_count: int = Field(ge=1)
    batch_index: int = Field(ge=0, description="Which batch of that part this is.")
    batch_count: int = Field(ge=1, description="How many batches that part was split into.")
    chunks: list[EmbeddedChunk] = Field(
        description="The chunks of this batch (may be empty for an empty text)."
    )


class SourceIndexed(_SourceEvent):
    """Every chunk of a source is in Qdrant and Chroma: it is searchable."""

    TOPIC: ClassVar[str] = topics.SOURCE_INDEXED
    event_type: Literal["SourceIndexed"] = "SourceIndexed"

    chunk_count: int = Field(ge=0)
    vector_id: str = Field(description="Stored in the source row's vector_id.", examples=["note_<uuid>"])
    qdrant_collection: str
    chroma_collection: str


class SourceFailed(Envelope):
    """A source (or an upload that never became one) failed for good; the reason is stored too."""

    TOPIC: ClassVar[str] = topics.SOURCE_FAILED
    event_type: Literal["SourceFailed"] = "SourceFailed"

    source_id: uuid.UUID | None = Field(description="The source, if one could be named.")
    source: SourceRef | None = Field(default=None)
    stage: str = Field(description="Where it failed.", examples=["upload", "embedding"])
    error_code: str = Field(max_length=60, examples=["class_not_owned", "invalid_event"])
    reason: str = Field(description="A clear, human-readable reason.")

    def key(self) -> bytes:
        """The Kafka key: the source id (or the event id when there is none)."""
        return str(self.source_id or self.event_id).encode()


class SourceReprocessRequested(Envelope):
    """Re-run a finished source (completed or failed) from a stage, e.g. after a better model or a fixed bug;
    the old vectors stay searchable until the new ones replace them in one step."""

    TOPIC: ClassVar[str] = topics.SOURCE_REPROCESS
    event_type: Literal["SourceReprocessRequested"] = "SourceReprocessRequested"

    source_id: uuid.UUID
    kind: SourceKind
    user_id: uuid.UUID = Field(description="Must own the source.")
    class_id: uuid.UUID = Field(description="Must be the source's class.")
    from_stage: Literal["upload", "embedding"] = Field(
        default="upload",
        description="upload: extract everything again; embedding: re-chunk and re-embed the stored text "
        "(notes and photos, whose text is in their row).",
    )

    def key(self) -> bytes:
        """The Kafka key: the source id."""
        return str(self.source_id).encode()


class SourceDeleted(Envelope):
    """The backend deleted a source, a whole class or a whole user; their vectors must go from both stores,
    including chunks still in flight when this arrives."""

    TOPIC: ClassVar[str] = topics.SOURCE_DELETED
    event_type: Literal["SourceDeleted"] = "SourceDeleted"

    user_id: uuid.UUID = Field(description="Whose content: always set, so a delete never crosses users.")
    class_id: uuid.UUID | None = Field(
        default=None, description="Set for a source or a class; None: the whole user."
    )
    source_id: uuid.UUID | None = Field(
        default=None, description="Set for one source; None: the class or user."
    )
    kind: SourceKind | None = Field(
        default=None, description="The source's kind, when one source is deleted."
    )

    @model_validator(mode="after")
    def _scope(self) -> SourceDeleted:
        if self.source_id is not None and self.class_id is None:
            raise ValueError("deleting a source needs its class_id too")
        return self

    @property
    def scope(self) -> Literal["source", "class", "user"]:
        """What is deleted."""
        return "source" if self.source_id else "class" if self.class_id else "user"

    def key(self) -> bytes:
        """The Kafka key: the most specific id deleted."""
        return str(self.source_id or self.class_id or self.user_id).encode()


class DeadLetter(BaseModel):
    """A message no consumer could handle, kept with its original bytes, for inspection and replay."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dead_letter_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    consumer: str = Field(description="The service that gave up.")
    original_topic: str
    original_partition: int | None = None
    original_offset: int | None = None
    original_key: str | None = None
    original_value_b64: str = Field(description="The original message bytes, base64.")
    error_code: str = Field(max_length=60)
    reason: str
    attempts: int = Field(ge=1)

    TOPIC: ClassVar[str] = topics.DEAD_LETTER


EVENT_MODELS: tuple[type[Envelope], ...] = (
    SourceUploaded,
    AudioUploaded,
    PhotoUploaded,
    TextbookUploaded,
    ContentReuseQueued,
    AudioPieceQueued,
    TextbookPagesQueued,
    TextExtracted,
    ChunksEmbedded,
    SourceIndexed,
    SourceFailed,
    SourceReprocessRequested,
    SourceDeleted,
)
"""Every enveloped event; each is the only event type of its topic."""

MODEL_OF_TOPIC: dict[str, type[BaseModel]] = {m.TOPIC: m for m in EVENT_MODELS} | {
    topics.DEAD_LETTER: DeadLetter
}
