"""index_chunks with recording fake stores, an in-memory ledger and a recording tracker."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from services.indexing.handlers import delete_vectors, index_chunks
from shared.errors import PermanentError
from shared.events.models import (
    ChunksEmbedded,
    EmbeddedChunk,
    SourceIndexed,
    SourceRef,
    decode_vector,
    encode_vector,
)
from shared.vectors.records import VectorRecord, point_id

USER = uuid.UUID("7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44")
CLASS = uuid.UUID("3fa85f64-5717-4562-b3fc-2c963f66afa6")
JOB = uuid.UUID("1d6c9b0e-8f2a-4a5b-9e3c-4b7d2f1a0c98")
QDRANT = "lmgpa_chunks"
SENTENCES = [
    "The derivative of a constant is zero.",
    "The chain rule differentiates a composition of functions.",
    "Glycolysis produces two pyruvate molecules per glucose.",
    "The Krebs cycle runs in the mitochondrial matrix.",
    "ATP synthase is driven by the proton gradient.",
]
PREFIX = {"audio": "recording", "photo": "photo", "textbook": "textbook", "note": "note"}
CONTENT_TYPE = {"audio": "transcripts", "photo": "photos", "textbook": "textbooks", "note": "notes"}


def vector_of(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def source(kind: str = "note", title: str = "Lecture 3: Derivatives") -> SourceRef:
    return SourceRef(
        source_id=uuid.uuid5(uuid.NAMESPACE_URL, f"https://lmgpa.test/{kind}/{title}"),
        kind=kind,  # type: ignore[arg-type]
        user_id=USER,
        class_id=CLASS,
        title=title,
        created_at=datetime(2024, 9, 12, 14, 5, 31, tzinfo=UTC),
    )


def batch(
    ref: SourceRef,
    *,
    part_index: int = 0,
    part_count: int = 1,
    batch_index: int = 0,
    batch_count: int = 1,
    chunks: int = 3,
    page: int | None = None,
    seconds: tuple[float, float] | None = None,
) -> ChunksEmbedded:
    first = part_index * 100_000 + batch_index * 48
    embedded = [
        EmbeddedChunk(
            chunk_index=first + i,
            text=SENTENCES[(first + i) % len(SENTENCES)],
            token_count=11,
            vector=encode_vector(vector_of(SENTENCES[(first + i) % len(SENTENCES)])),
            page_start=page,
            page_end=page,
            start_seconds=seconds[0] if seconds else None,
            end_seconds=seconds[1] if seconds else None,
        )
        for i in range(chunks)
    ]
    parent = uuid.uuid5(ref.source_id, f"TextExtracted/{part_index}")
    return ChunksEmbedded(
        event_id=uuid.uuid5(parent, f"ChunksEmbedded/{part_index}/{batch_index}"),
        correlation_id=JOB,
        causation_id=parent,
        producer="embedding",
        source=ref,
        model="all-MiniLM-L6-v2",
        dimensions=384,
        part_index=part_index,
        part_count=part_count,
        batch_index=batch_index,
        batch_count=batch_count,
        chunks=embedded,
    )


@dataclass
class RecordingStore:
    name: str
    log: list[tuple[str, Any]]
    records: dict[str, VectorRecord] = field(default_factory=dict)

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        self.log.append(("upsert", self.name))
        for r in records:
            self.records[r.point_id] = r

    async def delete_records(self, records: Sequence[VectorRecord]) -> None:
        self.log.append(("delete_records", self.name))
        for r in records:
            self.records.pop(r.point_id, None)

    async def delete(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID | None = None, source_id: uuid.UUID | None = None
    ) -> int:
        self.log.append(("delete", self.name))
        doomed = [
            k
            for k, r in self.records.items()
            if r.metadata["user_id"] == str(user_id)
            and (class_id is None or r.metadata["class_id"] == str(class_id))
            and (source_id is None or r.metadata["source_id"] == str(source_id))
        ]
        for k in doomed:
            del self.records[k]
        return len(doomed)


@dataclass
class MemoryLedger:
    """Counts batches per source; reports the total once every batch of every part is in."""

    log: list[tuple[str, Any]]
    already_complete: set[uuid.UUID] = field(default_factory=set)
    seen: dict[uuid.UUID, dict[tuple[int, int], ChunksEmbedded]] = field(default_factory=dict)
    completed: list[tuple[uuid.UUID, int]] = field(default_factory=list)

    async def record_batch(self, event: ChunksEmbedded) -> tuple[int, int | None]:
        self.log.append(("record_batch", event.event_id))
        got = self.seen.setdefault(event.source.source_id, {})
        got[(event.part_index, event.batch_index)] = event
        indexed = sum(len(e.chunks) for e in got.values())
        batch_counts = {e.part_index: e.batch_count for e in got.values()}
        expected = {
            (p, b) for p in range(event.part_count) if p in batch_counts for b in range(batch_counts[p])
        }
        done = len(batch_counts) == event.part_count and expected <= got.keys()
        return indexed, indexed if done else None

    tombstones: set[uuid.UUID] = field(default_factory=set)
    tombstone_after_checks: int | None = None
    """Simulates a delete landing mid-write: the tombstone appears after this many checks."""
    checks: int = 0
    pending_tombstone: set[uuid.UUID] = field(default_factory=set)

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        self.log.append(("deleted?", len(sources)))
        self.checks += 1
        if self.tombstone_after_checks is not None and self.checks > self.tombstone_after_checks:
            self.tombstones |= self.pending_tombstone
        return {s.source_id for s in sources} & self.tombstones

    async def begin_deletion(self, event: Any) -> None:
        self.log.append(("tombstone", event.source_id))
        self.tombstones.add(event.source_id)

    async def end_deletion(self, event: Any, *, removed: int) -> None:
        self.log.append(("deletion_done", removed))

    async def complete(self, source: SourceRef, *, chunk_count: int) -> bool:
        self.log.append(("complete", source.source_id))
        if source.source_id in self.already_complete:
            return False
        self.already_complete.add(source.source_id)
        self.completed.append((source.source_id, chunk_count))
        return True


@dataclass
class RecordingTracker:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def started(
        self, source_id: uuid.UUID, stage: str, *, units_total: int | None = None, unit: str | None = None
    ) -> None:
        self.calls.append(("started", source_id, stage))

    async def progressed(
        self, source_id: uuid.UUID, stage: str, *, units_done: int, units_total: int | None = None
    ) -> None:
        self.calls.append(("progressed", source_id, stage, units_done))

    async def finished(
        self,
        source_id: uuid.UUID,
        stage: str,
        *,
        units_done: int | None = None,
        next_stage: str | None = None,
    ) -> None:
        self.calls.append(("finished", source_id, stage, units_done))


@dataclass
class Harness:
    log: list[tuple[str, Any]] = field(default_factory=list)
    tracker: RecordingTracker = field(default_factory=RecordingTracker)

    def __post_init__(self) -> None:
        self.qdrant = RecordingStore("qdrant", self.log)
        self.chroma = RecordingStore("chroma", self.log)
        self.ledger = MemoryLedger(self.log)

    async def run(self, events: Sequence[ChunksEmbedded]) -> list[tuple[ChunksEmbedded, Any]]:
        return list(
            await index_chunks(
                events,
                stores=[self.qdrant, self.chroma],
                ledger=self.ledger,
                tracker=self.tracker,
                qdrant_collection=QDRANT,
            )
        )


def indexed_events(results: list[tuple[ChunksEmbedded, Any]]) -> list[SourceIndexed]:
    out: list[SourceIndexed] = []
    for _, result in results:
        assert not isinstance(result, PermanentError), result
        out.extend(e for e in result if isinstance(e, SourceIndexed))
    return out


async def test_every_store_is_written_before_the_ledger_counts_the_batch() -> None:
    note, book = source("note"), source("textbook", "Campbell Biology ch. 9")
    events = [
        batch(note, chunks=4),
        batch(book, part_count=2, part_index=0, chunks=2, page=211),
        batch(book, part_count=2, part_index=1, chunks=5, page=212),
    ]
    h = Harness()

    await h.run(events)

    h.log[:] = [entry for entry in h.log if entry[0] != "deleted?"]  # tombstone checks are tested apart
    kinds = [entry[0] for entry in h.log]
    first_ledger = kinds.index("record_batch")
    assert h.log[:first_ledger] == [("upsert", "qdrant"), ("upsert", "chroma")]
    assert "upsert" not in kinds[first_ledger:]
    assert [e for k, e in h.log if k == "record_batch"] == [ev.event_id for ev in events]
    expected_ids = {point_id(ev.source.source_id, c.chunk_index) for ev in events for c in ev.chunks}
    assert set(h.qdrant.records) == expected_ids
    assert set(h.chroma.records) == expected_ids


@pytest.mark.parametrize("kind", ["audio", "photo", "textbook", "note"])
async def test_record_ids_metadata_and_vectors(kind: str) -> None:
    ref = source(kind, "Week 2: Cellular respiration")
    event = batch(
        ref,
        part_index=1,
        part_count=2,
        batch_index=1,
        batch_count=2,
        chunks=3,
        page=7 if kind in ("textbook", "photo") else None,
        seconds=(61.5, 118.0) if kind == "audio" else None,
    )
    h = Harness()

    await h.run([event])

    assert len(h.qdrant.records) == 3
    for chunk in event.chunks:
        record = h.qdrant.records[point_id(ref.source_id, chunk.chunk_index)]
        assert record == h.chroma.records[record.point_id]
        assert record.point_id == str(uuid.UUID(record.point_id))
        assert record.document_id == f"{PREFIX[kind]}_{ref.source_id}_{chunk.chunk_index}"
        assert record.document == chunk.text
        assert record.vector == decode_vector(chunk.vector) == vector_of(chunk.text)
        meta = record.metadata
        assert None not in meta.values()
        assert meta["user_id"] == str(USER)
        assert meta["class_id"] == str(CLASS)
        assert meta["content_type"] == CONTENT_TYPE[kind]
        assert meta["source_id"] == str(ref.source_id)
        assert meta["title"] == "Week 2: Cellular respiration"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(meta["date"]))
        assert meta["date"] == "2024-09-12"
        assert meta["chunk_index"] == chunk.chunk_index
        assert record.chroma_collection == f"{USER}_{CLASS}_{CONTENT_TYPE[kind]}"
        if kind in ("textbook", "photo"):
            assert (meta["page_start"], meta["page_end"]) == (7, 7)
        else:
            assert "page_start" not in meta
        if kind == "audio":
            assert (meta["start_seconds"], meta["end_seconds"]) == (61.5, 118.0)
        else:
            assert "start_seconds" not in meta


async def test_point_ids_are_stable_and_distinct() -> None:
    ref = source("textbook", "Calculus: Early Transcendentals")
    h1, h2 = Harness(), Harness()
    event = batch(ref, chunks=5)

    await h1.run([event])
    await h2.run([event])

    assert set(h1.qdrant.records) == set(h2.qdrant.records)
    assert len(h1.qdrant.records) == 5


async def test_source_indexed_once_when_the_ledger_reports_the_total() -> None:
    ref = source("audio", "Week 2 lecture recording")
    first = batch(
        ref, part_count=2, part_index=0, batch_index=0, batch_count=2, chunks=48, seconds=(0.0, 600.0)
    )
    second = batch(
        ref, part_count=2, part_index=0, batch_index=1, batch_count=2, chunks=10, seconds=(600.0, 700.0)
    )
    last = batch(ref, part_count=2, part_index=1, chunks=7, seconds=(700.0, 812.5))
    h = Harness()

    early = await h.run([first, second])
    assert indexed_events(early) == []
    assert [r for _, r in early] == [[], []]
    assert ("complete", ref.source_id) not in h.log

    final = await h.run([last])

    (done,) = indexed_events(final)
    assert done.chunk_count == 65
    assert done.source == ref
    assert done.vector_id == f"recording_{ref.source_id}"
    assert done.qdrant_collection == QDRANT
    assert done.chroma_collection == f"{USER}_{CLASS}_transcripts"
    assert done.correlation_id == JOB
    assert done.causation_id == last.event_id
    assert done.producer == "indexing"
    assert done.key() == str(ref.source_id).encode()
    assert h.ledger.completed == [(ref.source_id, 65)]
    assert ("finished", ref.source_id, "indexing", 65) in h.tracker.calls
    assert h.tracker.calls[0] == ("started", ref.source_id, "indexing")
    assert [c for c in h.tracker.calls if c[0] == "progressed"] == [
        ("progressed", ref.source_id, "indexing", 48),
        ("progressed", ref.source_id, "indexing", 58),
    ]


async def test_all_batches_in_one_call_emit_one_source_indexed() -> None:
    ref = source("note")
    events = [batch(ref, batch_index=i, batch_count=3, chunks=48 if i < 2 else 4) for i in range(3)]
    h = Harness()

    results = await h.run(events)

    (done,) = indexed_events(results)
    assert done.chunk_count == 100
    assert done.causation_id == events[-1].event_id
    assert done.vector_id == f"note_{ref.source_id}"
    assert done.chroma_collection == f"{USER}_{CLASS}_notes"


async def test_not_emitted_while_batches_are_missing() -> None:
    ref = source("textbook", "Campbell Biology ch. 9")
    h = Harness()

    results = await h.run(
        [
            batch(ref, part_count=3, part_index=0, chunks=5, page=1),
            batch(ref, part_count=3, part_index=2, chunks=5, page=3),
        ]
    )

    assert indexed_events(results) == []
    assert h.ledger.completed == []
    assert not any(c[0] == "finished" for c in h.tracker.calls)
    assert len(h.qdrant.records) == 10


async def test_replayed_final_batch_does_not_emit_again() -> None:
    ref = source("photo", "Whiteboard: Krebs cycle")
    event = batch(ref, chunks=2, page=1)
    h = Harness()

    (done,) = indexed_events(await h.run([event]))
    replay = await h.run([event])

    assert indexed_events(replay) == []
    assert replay[0][1] == []
    assert h.ledger.completed == [(ref.source_id, 2)]
    assert [c for c in h.tracker.calls if c[0] == "finished"] == [("finished", ref.source_id, "indexing", 2)]
    assert done.vector_id == f"photo_{ref.source_id}"
    # The replay rewrote the same records under the same ids.
    assert len(h.qdrant.records) == 2


async def test_already_completed_source_emits_nothing() -> None:
    ref = source("note")
    h = Harness()
    h.ledger.already_complete.add(ref.source_id)

    results = await h.run([batch(ref, chunks=3)])

    assert results[0][1] == []
    assert indexed_events(results) == []


async def test_zero_chunks_in_total_is_a_permanent_no_text_error_for_that_event() -> None:
    blank = source("photo", "Blank whiteboard")
    note = source("note")
    empty = batch(blank, chunks=0)
    fine = batch(note, chunks=2)
    h = Harness()

    results = await h.run([empty, fine])

    assert results[0][0] == empty
    assert isinstance(results[0][1], PermanentError)
    assert results[0][1].code == "no_text"
    assert h.ledger.completed == [(note.source_id, 2)]
    (done,) = [e for e in results[1][1] if isinstance(e, SourceIndexed)]
    assert done.source == note


async def test_chunks_of_a_deleted_source_are_not_written() -> None:
    src = source("note", "Deleted before indexing")
    log: list[tuple[str, Any]] = []
    store = RecordingStore("qdrant", log)
    ledger = MemoryLedger(log, tombstones={src.source_id})
    results = await index_chunks(
        [batch(src, chunks=3)],
        stores=[store],
        ledger=ledger,
        tracker=RecordingTracker(),
        qdrant_collection="c",
    )
    assert store.records == {}
    assert isinstance(results[0][1], PermanentError) and results[0][1].code == "deleted"
    assert not [entry for entry in log if entry[0] == "record_batch"]


async def test_a_delete_landing_mid_write_takes_the_written_chunks_back() -> None:
    src = source("note", "Deleted during indexing")
    log: list[tuple[str, Any]] = []
    stores = [RecordingStore("qdrant", log), RecordingStore("chroma", log)]
    ledger = MemoryLedger(log, tombstone_after_checks=1, pending_tombstone={src.source_id})
    results = await index_chunks(
        [batch(src, chunks=4)],
        stores=stores,
        ledger=ledger,
        tracker=RecordingTracker(),
        qdrant_collection="c",
    )
    assert all(s.records == {} for s in stores), "no zombie vectors"
    assert [e[0] for e in log] == [
        "deleted?",
        "upsert",
        "upsert",
        "deleted?",
        "delete_records",
        "delete_records",
    ]
    assert isinstance(results[0][1], PermanentError) and results[0][1].code == "deleted"
    assert ledger.completed == []


async def test_a_delete_writes_its_tombstone_before_touching_any_store() -> None:
    from shared.events.models import SourceDeleted

    src = source("note", "To delete")
    log: list[tuple[str, Any]] = []
    stores = [RecordingStore("qdrant", log), RecordingStore("chroma", log)]
    ledger = MemoryLedger(log)
    await index_chunks(
        [batch(src, chunks=2)],
        stores=stores,
        ledger=ledger,
        tracker=RecordingTracker(),
        qdrant_collection="c",
    )
    log.clear()
    event_id = uuid.uuid4()
    deletion = SourceDeleted(
        event_id=event_id,
        correlation_id=event_id,
        producer="backend",
        user_id=src.user_id,
        class_id=src.class_id,
        source_id=src.source_id,
        kind="note",
    )
    assert await delete_vectors(deletion, stores=stores, ledger=ledger) == []
    assert [e[0] for e in log] == ["tombstone", "delete", "delete", "deletion_done"]
    assert log[-1] == ("deletion_done", 4) and all(s.records == {} for s in stores)


def test_a_search_keeps_each_sources_newest_generation_only() -> None:
    from shared.vectors.records import SearchHit, newest_generation_only

    def hit(source: str, generation: int, score: float) -> SearchHit:
        return SearchHit(
            score, f"{source}-{generation}-{score}", "t", {"source_id": source, "generation": generation}
        )

    hits = [hit("a", 0, 0.9), hit("a", 1, 0.8), hit("a", 1, 0.5), hit("b", 0, 0.7), hit("a", 0, 0.4)]
    kept = newest_generation_only(hits)
    assert [(h.metadata["source_id"], h.metadata["generation"], h.score) for h in kept] == [
        ("a", 1, 0.8),
        ("a", 1, 0.5),
        ("b", 0, 0.7),
    ]
    assert newest_generation_only([]) == []
