"""embed_chunks with a fake chunker, a hash-based fake embedder, a recording tracker and the real chunker."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from services.embedding.adapters import TokenChunker
from services.embedding.handlers import CHUNK_INDEX_STRIDE, CHUNKS_PER_MESSAGE, embed_chunks
from shared.chunking import Chunk, HfTokenCounter
from shared.errors import PermanentError
from shared.events.models import (
    ChunksEmbedded,
    SourceRef,
    TextExtracted,
    TextSegment,
    decode_vector,
)
from shared.events.parts import MAX_PART_CHARS, split_into_parts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DIMENSIONS = 384
USER = uuid.UUID("7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44")
CLASS = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
JOB = uuid.UUID("1d6c9b0e-8f2a-4a5b-9e3c-4b7d2f1a0c98")

CALCULUS = (
    "The derivative of f at a is the limit of the difference quotient as h approaches zero. "
    "Geometrically it is the slope of the tangent line to the graph of f at the point (a, f(a)). "
    "The product rule states that (fg)' = f'g + fg', and the quotient rule follows from it. "
    "Implicit differentiation treats y as a function of x and differentiates both sides of an equation. "
    "Related rates problems link the derivatives of several quantities that change with time. "
    "The mean value theorem guarantees a point where the instantaneous rate equals the average rate. "
)
BIOLOGY = (
    "Glycolysis splits one glucose molecule into two pyruvate molecules in the cytoplasm. "
    "In the mitochondrial matrix the citric acid cycle oxidises acetyl-CoA and reduces NAD+ and FAD. "
    "The electron transport chain on the inner membrane pumps protons into the intermembrane space. "
    "ATP synthase lets the protons flow back and couples that flow to the phosphorylation of ADP. "
    "Without oxygen as the final electron acceptor, cells fall back on fermentation to regenerate NAD+. "
    "Photosynthesis in the chloroplast runs the light reactions in the thylakoids and the Calvin cycle in the stroma. "
)


def unit_vector(text: str) -> np.ndarray[Any, Any]:
    """A deterministic unit-length float32 vector from a hash of the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class HashEmbedder:
    """Deterministic vectors; counts calls to check batching across messages."""

    name: str = "all-MiniLM-L6-v2"
    dimensions: int = DIMENSIONS
    calls: list[list[str]] = field(default_factory=list)

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        self.calls.append(list(texts))
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return np.stack([unit_vector(t) for t in texts])


@dataclass
class WordChunker:
    """``size`` words per chunk, never across segments; carries each segment's page and time span."""

    size: int = 6

    def chunk(self, segments: Sequence[TextSegment]) -> list[Chunk]:
        chunks: list[Chunk] = []
        for s in segments:
            words = s.text.split()
            for i in range(0, len(words), self.size):
                piece = words[i : i + self.size]
                chunks.append(
                    Chunk(
                        index=len(chunks),
                        text=" ".join(piece),
                        token_count=len(piece),
                        page_start=s.page,
                        page_end=s.page,
                        start_seconds=s.start_seconds,
                        end_seconds=s.end_seconds,
                    )
                )
        return chunks


@dataclass
class FixedChunker:
    """Returns a prepared list of chunks, whatever the text."""

    chunks: list[Chunk]

    def chunk(self, segments: Sequence[TextSegment]) -> list[Chunk]:
        return list(self.chunks)


@dataclass
class RecordingTracker:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def started(
        self, source_id: uuid.UUID, stage: str, *, units_total: int | None = None, unit: str | None = None
    ) -> None:
        self.calls.append(("started", source_id, stage, unit))

    async def progressed(
        self, source_id: uuid.UUID, stage: str, *, units_done: int, units_total: int | None = None
    ) -> None:
        self.calls.append(("progressed", source_id, stage, units_done, units_total))

    async def finished(
        self,
        source_id: uuid.UUID,
        stage: str,
        *,
        units_done: int | None = None,
        next_stage: str | None = None,
    ) -> None:
        self.calls.append(("finished", source_id, stage, units_done, next_stage))


def source(
    kind: str = "note", title: str = "Lecture 3: Derivatives", sid: uuid.UUID | None = None
) -> SourceRef:
    return SourceRef(
        source_id=sid or uuid.uuid5(uuid.NAMESPACE_URL, f"https://lmgpa.test/{kind}/{title}"),
        kind=kind,  # type: ignore[arg-type]
        user_id=USER,
        class_id=CLASS,
        title=title,
        created_at=datetime(2024, 9, 12, 14, 5, 31, tzinfo=UTC),
    )


def extracted(
    segments: list[TextSegment],
    *,
    ref: SourceRef | None = None,
    part_index: int = 0,
    part_count: int = 1,
) -> TextExtracted:
    ref = ref or source()
    return TextExtracted(
        event_id=uuid.uuid5(ref.source_id, f"TextExtracted/{part_index}"),
        correlation_id=JOB,
        causation_id=uuid.uuid5(JOB, "upload"),
        producer="upload",
        source=ref,
        segments=segments,
        part_index=part_index,
        part_count=part_count,
    )


def emitted(result: Any) -> list[ChunksEmbedded]:
    assert not isinstance(result, PermanentError), result
    assert all(isinstance(e, ChunksEmbedded) for e in result)
    return list(result)


async def test_several_events_are_embedded_in_one_call() -> None:
    events = [
        extracted([TextSegment(text=CALCULUS)], ref=source("note", "Lecture 3: Derivatives")),
        extracted([TextSegment(text=BIOLOGY, page=1)], ref=source("textbook", "Campbell Biology ch. 9")),
        extracted(
            [TextSegment(text=CALCULUS + BIOLOGY, start_seconds=0.0, end_seconds=95.5)],
            ref=source("audio", "Week 2 lecture recording"),
        ),
    ]
    embedder = HashEmbedder()
    chunker = WordChunker()

    results = await embed_chunks(events, chunker=chunker, embedder=embedder, tracker=RecordingTracker())

    assert len(embedder.calls) == 1
    expected_texts = [c.text for e in events for c in chunker.chunk(e.segments)]
    assert embedder.calls[0] == expected_texts
    assert [event for event, _ in results] == events
    for event, result in results:
        chunks = [c for out in emitted(result) for c in out.chunks]
        assert [c.text for c in chunks] == [c.text for c in chunker.chunk(event.segments)]
        for c in chunks:
            # Each event's chunks get their own vectors, not a neighbour's: positions are offset right.
            assert decode_vector(c.vector) == unit_vector(c.text).tolist()
        assert {out.source for out in emitted(result)} == {event.source}


async def test_chunk_index_is_part_index_times_stride_plus_position() -> None:
    ref = source()
    events = [
        extracted([TextSegment(text=CALCULUS)], ref=ref, part_index=0, part_count=3),
        extracted([TextSegment(text=BIOLOGY)], ref=ref, part_index=2, part_count=3),
    ]
    chunker = WordChunker()

    results = await embed_chunks(events, chunker=chunker, embedder=HashEmbedder(), tracker=RecordingTracker())

    for event, result in results:
        n = len(chunker.chunk(event.segments))
        assert n > 1
        indexes = [c.chunk_index for out in emitted(result) for c in out.chunks]
        assert indexes == [event.part_index * CHUNK_INDEX_STRIDE + i for i in range(n)]
        assert {out.part_index for out in emitted(result)} == {event.part_index}
        assert {out.part_count for out in emitted(result)} == {3}


async def test_many_chunks_are_split_into_numbered_batches() -> None:
    words = (CALCULUS + BIOLOGY).split()
    n_chunks = 2 * CHUNKS_PER_MESSAGE + 5
    text = " ".join(words[i % len(words)] for i in range(n_chunks * 6))
    event = extracted([TextSegment(text=text)])

    ((_, result),) = await embed_chunks(
        [event], chunker=WordChunker(size=6), embedder=HashEmbedder(), tracker=RecordingTracker()
    )

    batches = emitted(result)
    assert len(batches) == 3
    assert [b.batch_index for b in batches] == [0, 1, 2]
    assert {b.batch_count for b in batches} == {3}
    assert all(len(b.chunks) <= CHUNKS_PER_MESSAGE for b in batches)
    assert [c.chunk_index for b in batches for c in b.chunks] == list(range(n_chunks))
    assert " ".join(c.text for b in batches for c in b.chunks) == text
    assert len({b.event_id for b in batches}) == 3
    assert {b.causation_id for b in batches} == {event.event_id}
    assert {b.correlation_id for b in batches} == {JOB}
    assert {(b.model, b.dimensions) for b in batches} == {("all-MiniLM-L6-v2", DIMENSIONS)}


async def test_exactly_one_full_batch_is_not_followed_by_an_empty_one() -> None:
    text = " ".join(f"w{i}" for i in range(CHUNKS_PER_MESSAGE))
    ((_, result),) = await embed_chunks(
        [extracted([TextSegment(text=text)])],
        chunker=WordChunker(size=1),
        embedder=HashEmbedder(),
        tracker=RecordingTracker(),
    )
    batches = emitted(result)
    assert [(b.batch_index, b.batch_count, len(b.chunks)) for b in batches] == [(0, 1, CHUNKS_PER_MESSAGE)]


async def test_output_event_ids_are_stable_across_replays() -> None:
    event = extracted([TextSegment(text=CALCULUS * 12)], part_index=1, part_count=2)

    first = await embed_chunks(
        [event], chunker=WordChunker(), embedder=HashEmbedder(), tracker=RecordingTracker()
    )
    again = await embed_chunks(
        [event], chunker=WordChunker(), embedder=HashEmbedder(), tracker=RecordingTracker()
    )

    assert [e.event_id for e in emitted(first[0][1])] == [e.event_id for e in emitted(again[0][1])]


async def test_page_and_time_spans_are_carried() -> None:
    textbook = extracted(
        [TextSegment(text=BIOLOGY, page=211), TextSegment(text=CALCULUS, page=212)],
        ref=source("textbook", "Campbell Biology ch. 9"),
    )
    recording = extracted(
        [
            TextSegment(text=CALCULUS, start_seconds=12.5, end_seconds=48.0),
            TextSegment(text=BIOLOGY, start_seconds=48.0, end_seconds=91.25),
        ],
        ref=source("audio", "Week 2 lecture recording"),
    )

    results = await embed_chunks(
        [textbook, recording], chunker=WordChunker(), embedder=HashEmbedder(), tracker=RecordingTracker()
    )

    book_chunks = [c for out in emitted(results[0][1]) for c in out.chunks]
    assert {(c.page_start, c.page_end) for c in book_chunks} == {(211, 211), (212, 212)}
    assert all(c.start_seconds is None and c.end_seconds is None for c in book_chunks)
    audio_chunks = [c for out in emitted(results[1][1]) for c in out.chunks]
    assert {(c.start_seconds, c.end_seconds) for c in audio_chunks} == {(12.5, 48.0), (48.0, 91.25)}
    assert all(c.page_start is None for c in audio_chunks)
    assert all(c.token_count > 0 for c in book_chunks + audio_chunks)


async def test_event_without_chunks_emits_one_empty_batch() -> None:
    empty = extracted([TextSegment(text="   \n  ")], ref=source("photo", "Blank whiteboard"))
    full = extracted([TextSegment(text=CALCULUS)])
    tracker = RecordingTracker()

    results = await embed_chunks(
        [empty, full], chunker=WordChunker(), embedder=HashEmbedder(), tracker=tracker
    )

    (only,) = emitted(results[0][1])
    assert only.chunks == []
    assert (only.batch_index, only.batch_count, only.part_index, only.part_count) == (0, 1, 0, 1)
    assert only.source == empty.source
    full_indexes = [c.chunk_index for out in emitted(results[1][1]) for c in out.chunks]
    assert full_indexes == list(range(len(full_indexes)))
    assert ("finished", empty.source.source_id, "embedding", 0, "indexing") in tracker.calls


async def test_tracker_started_and_finished_or_progressed_per_event() -> None:
    note = source("note", "Lecture 3: Derivatives")
    book = source("textbook", "Calculus: Early Transcendentals ch. 3")
    events = [
        extracted([TextSegment(text=CALCULUS)], ref=note),
        extracted([TextSegment(text=CALCULUS, page=120)], ref=book, part_index=0, part_count=2),
        extracted([TextSegment(text=BIOLOGY, page=121)], ref=book, part_index=1, part_count=2),
    ]
    tracker = RecordingTracker()
    chunker = WordChunker()

    await embed_chunks(events, chunker=chunker, embedder=HashEmbedder(), tracker=tracker)

    started = [c for c in tracker.calls if c[0] == "started"]
    # A single-part source counts chunks; a source in several parts counts parts.
    assert started == [
        ("started", note.source_id, "embedding", "chunks"),
        ("started", book.source_id, "embedding", "parts"),
        ("started", book.source_id, "embedding", "parts"),
    ]
    finished = [c for c in tracker.calls if c[0] == "finished"]
    # Finished once per source, on its final part, handing over to indexing.
    assert [(c[1], c[2], c[4]) for c in finished] == [
        (note.source_id, "embedding", "indexing"),
        (book.source_id, "embedding", "indexing"),
    ]
    assert finished[0][3] == len(chunker.chunk(events[0].segments))
    assert finished[1][3] == 2, "a two-part source finishes with 2 of 2 parts done"
    progressed = [c for c in tracker.calls if c[0] == "progressed"]
    assert [(c[1], c[2]) for c in progressed] == [(book.source_id, "embedding")]
    # The non-final part reports progress before the final part finishes the stage.
    assert tracker.calls.index(progressed[0]) < tracker.calls.index(finished[1])


async def test_part_with_too_many_chunks_is_refused_and_the_others_still_embedded() -> None:
    huge = [
        Chunk(
            index=i,
            text=f"limit {i}",
            token_count=2,
            page_start=None,
            page_end=None,
            start_seconds=None,
            end_seconds=None,
        )
        for i in range(CHUNK_INDEX_STRIDE)
    ]

    class Mixed:
        def chunk(self, segments: Sequence[TextSegment]) -> list[Chunk]:
            if segments[0].text == "huge":
                return FixedChunker(huge).chunk(segments)
            return WordChunker().chunk(segments)

    too_big = extracted([TextSegment(text="huge")], ref=source("textbook", "Encyclopaedia"))
    fine = extracted([TextSegment(text=BIOLOGY)])
    embedder = HashEmbedder()

    results = await embed_chunks(
        [too_big, fine], chunker=Mixed(), embedder=embedder, tracker=RecordingTracker()
    )

    assert isinstance(results[0][1], PermanentError)
    assert results[0][1].code == "too_large"
    assert len(embedder.calls) == 1
    assert embedder.calls[0] == [c.text for c in WordChunker().chunk(fine.segments)]
    for c in (c for out in emitted(results[1][1]) for c in out.chunks):
        assert decode_vector(c.vector) == unit_vector(c.text).tolist()


@pytest.fixture(scope="module")
def token_chunker() -> TokenChunker:
    return TokenChunker(HfTokenCounter(), target_tokens=200, overlap_tokens=32)


def long_lecture(words: int) -> str:
    """Real-looking prose: the two paragraphs, varied, until ``words`` words."""
    sentences = [s.strip() + "." for s in (CALCULUS + BIOLOGY).split(". ") if s.strip()]
    out: list[str] = []
    count = 0
    i = 0
    while count < words:
        sentence = sentences[i % len(sentences)].replace("the", ["the", "this", "that"][i % 3], 1)
        out.append(sentence + ("\n\n" if i % 7 == 6 else " "))
        count += len(sentence.split())
        i += 1
    return "".join(out)


async def test_real_chunker_events_stay_far_below_the_message_limit(token_chunker: TokenChunker) -> None:
    text = long_lecture(9000)
    pages = [TextSegment(text=text[i : i + 6000], page=1 + i // 6000) for i in range(0, len(text), 6000)]
    events = [
        extracted([TextSegment(text=text)], ref=source("note", "Complete semester notes")),
        extracted(pages, ref=source("textbook", "Biology and Calculus for Life Sciences")),
    ]
    embedder = HashEmbedder()

    results = await embed_chunks(events, chunker=token_chunker, embedder=embedder, tracker=RecordingTracker())

    assert len(embedder.calls) == 1
    for event, result in results:
        batches = emitted(result)
        assert len(batches) >= 2
        chunks = [c for b in batches for c in b.chunks]
        assert all(0 < c.token_count <= 200 for c in chunks)
        assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
        for b in batches:
            size = len(b.model_dump_json().encode("utf-8"))
            assert size < 1_000_000, f"{event.source.title}: batch {b.batch_index} is {size} bytes"
            assert ChunksEmbedded.model_validate_json(b.model_dump_json()) == b


async def test_largest_part_of_four_byte_characters_still_fits_one_message(
    token_chunker: TokenChunker,
) -> None:
    # Worst realistic case for bytes per word piece: words of > 100 four-byte characters (math italic
    # letters) are one [UNK] piece each, so a chunk's 200 pieces hold ~80 KB and overlap repeats some.
    word = "\U0001d465" * 101
    text = " ".join([word] * (MAX_PART_CHARS // (len(word) + 1)))
    (part,) = split_into_parts([TextSegment(text=text)])
    event = extracted(part, ref=source("note", "Pasted symbols"))
    assert len(event.model_dump_json().encode("utf-8")) < 1_000_000

    ((_, result),) = await embed_chunks(
        [event], chunker=token_chunker, embedder=HashEmbedder(), tracker=RecordingTracker()
    )

    batches = emitted(result)
    assert sum(len(b.chunks) for b in batches) > 1
    for b in batches:
        assert len(b.model_dump_json().encode("utf-8")) < 1_000_000


async def test_spans_are_copied_from_the_chunker_field_by_field() -> None:
    spanning = [
        Chunk(
            index=0,
            text="The Calvin cycle fixes carbon dioxide into three-carbon sugars.",
            token_count=13,
            page_start=44,
            page_end=45,
            start_seconds=None,
            end_seconds=None,
        ),
        Chunk(
            index=1,
            text="Rubisco is the most abundant enzyme on Earth.",
            token_count=10,
            page_start=None,
            page_end=None,
            start_seconds=1805.5,
            end_seconds=1862.25,
        ),
    ]

    ((_, result),) = await embed_chunks(
        [extracted([TextSegment(text="ignored by the fixed chunker")])],
        chunker=FixedChunker(spanning),
        embedder=HashEmbedder(),
        tracker=RecordingTracker(),
    )

    chunks = [c for out in emitted(result) for c in out.chunks]
    assert [(c.page_start, c.page_end, c.start_seconds, c.end_seconds) for c in chunks] == [
        (44, 45, None, None),
        (None, None, 1805.5, 1862.25),
    ]
    assert [(c.text, c.token_count) for c in chunks] == [(s.text, s.token_count) for s in spanning]
