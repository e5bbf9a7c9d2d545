"""reuse_content with fake stores holding a donor's chunks, an in-memory ledger and a recording tracker."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from services.indexing.handlers import reuse_content
from shared.db.reuse import Donor
from shared.errors import PermanentError
from shared.events.models import ContentReuseQueued, SourceIndexed, SourceRef, TextbookUploaded
from shared.vectors.records import CHUNK_FIELDS, DonorVectors, VectorRecord, rekeyed
from tests.unit.test_indexing_handler import RecordingTracker

DONOR = SourceRef(
    source_id=uuid.UUID("11111111-1111-4111-8111-111111111111"),
    kind="textbook",
    user_id=uuid.UUID("22222222-2222-4222-8222-222222222222"),
    class_id=uuid.UUID("33333333-3333-4333-8333-333333333333"),
    title="Alice's copy of Calculus",
    created_at=datetime(2024, 1, 2, tzinfo=UTC),
)
TARGET = SourceRef(
    source_id=uuid.UUID("44444444-4444-4444-8444-444444444444"),
    kind="textbook",
    user_id=uuid.UUID("55555555-5555-4555-8555-555555555555"),
    class_id=uuid.UUID("66666666-6666-4666-8666-666666666666"),
    title="Calculus (Bob)",
    created_at=datetime(2024, 9, 12, tzinfo=UTC),
)
CHUNKS = 5
DONOR_FIELDS = {str(DONOR.source_id), str(DONOR.user_id), str(DONOR.class_id), DONOR.title, "2024-01-02"}


def donor_records() -> list[VectorRecord]:
    donor_meta = {"chunk_index": 0, "token_count": 1, "model": "m"}
    out = []
    for i in range(CHUNKS):
        meta = {**donor_meta, "chunk_index": i, "token_count": 10 + i, "page_start": i + 1, "page_end": i + 1}
        out.append(rekeyed(DONOR, meta, vector=[float(i)] * 4, document=f"chunk {i}"))
    return out


@dataclass
class CopyStore:
    """A store holding the donor's records; `short_by` drops that many (the donor deleted mid-copy)."""

    records: dict[str, VectorRecord] = field(default_factory=lambda: {r.point_id: r for r in donor_records()})
    short_by: int = 0
    log: list[str] = field(default_factory=list)

    async def copy_source(self, donor: DonorVectors, target: SourceRef) -> int:
        self.log.append("copy")
        found = [
            r
            for r in self.records.values()
            if r.metadata["source_id"] == str(donor.source_id)
            and r.metadata["generation"] == donor.generation
        ]
        found = found[: len(found) - self.short_by]
        for r in found:
            new = rekeyed(target, r.metadata, vector=r.vector, document=r.document)
            self.records[new.point_id] = new
        return len(found)

    async def promote(self, source: SourceRef) -> None:
        self.log.append("promote")
        for key, r in list(self.records.items()):
            if r.metadata["source_id"] == str(source.source_id):
                self.records[key] = VectorRecord(
                    r.point_id, r.document_id, r.vector, r.document, {**r.metadata, "visible": True}
                )

    async def delete(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID | None = None, source_id: uuid.UUID | None = None
    ) -> int:
        self.log.append("delete")
        doomed = [
            k
            for k, r in self.records.items()
            if r.metadata["user_id"] == str(user_id) and r.metadata["source_id"] == str(source_id)
        ]
        for k in doomed:
            del self.records[k]
        return len(doomed)

    def of(self, source: SourceRef) -> list[VectorRecord]:
        return [r for r in self.records.values() if r.metadata["source_id"] == str(source.source_id)]


@dataclass
class ReuseLedger:
    donor: Donor | None = field(
        default_factory=lambda: Donor(
            source_id=DONOR.source_id,
            user_id=DONOR.user_id,
            class_id=DONOR.class_id,
            kind="textbook",
            generation=0,
            chunk_count=CHUNKS,
        )
    )
    status: str = "processing"
    tombstones: set[uuid.UUID] = field(default_factory=set)
    tombstone_during_copy: bool = False
    log: list[Any] = field(default_factory=list)

    async def job_status(self, source: SourceRef) -> str | None:
        return self.status

    async def deleted(self, sources: Sequence[SourceRef]) -> set[uuid.UUID]:
        found = {s.source_id for s in sources} & self.tombstones
        if self.tombstone_during_copy and "begin" in self.log:
            found |= {s.source_id for s in sources}
        return found

    async def find_donor(self, event: ContentReuseQueued) -> Donor | None:
        return self.donor

    async def begin_reuse(self, source: SourceRef, *, chunk_count: int) -> None:
        self.log.append("begin")

    async def complete_reuse(self, source: SourceRef, donor: Donor) -> bool:
        self.log.append(("complete", donor.chunk_count))
        if self.status != "processing":
            return False
        self.status = "completed"
        return True

    async def fall_back(self, source: SourceRef, *, next_stage: str) -> None:
        self.log.append(("fall_back", next_stage))


def queued() -> ContentReuseQueued:
    return ContentReuseQueued(
        event_id=uuid.UUID("77777777-7777-4777-8777-777777777777"),
        correlation_id=uuid.UUID("88888888-8888-4888-8888-888888888888"),
        producer="upload",
        source=TARGET,
        storage_url="file:///srv/storage/book.pdf",
        media_type="application/pdf",
        size_bytes=1234,
        content_sha256="c" * 64,
        pipeline_version="d" * 64,
    )


async def run(stores: Sequence[CopyStore], ledger: ReuseLedger) -> tuple[list[Any], RecordingTracker]:
    tracker = RecordingTracker()
    out = await reuse_content(queued(), stores=stores, ledger=ledger, tracker=tracker, qdrant_collection="q")
    return list(out), tracker


async def test_a_full_copy_is_the_targets_own_shown_and_completed() -> None:
    stores, ledger = [CopyStore(), CopyStore()], ReuseLedger()
    out, tracker = await run(stores, ledger)

    (indexed,) = out
    assert isinstance(indexed, SourceIndexed)
    assert indexed.chunk_count == CHUNKS and indexed.source == TARGET
    assert ("complete", CHUNKS) in ledger.log
    assert tracker.calls[-1] == ("finished", TARGET.source_id, "indexing", CHUNKS)
    for store in stores:
        mine = store.of(TARGET)
        assert len(mine) == CHUNKS
        # Written visible, as a computed upload's chunks are: nothing to show after.
        assert store.log == ["copy"]
        donor = {r.metadata["chunk_index"]: r for r in store.of(DONOR)}
        for r in mine:
            meta = r.metadata
            assert meta["visible"] is True
            assert (meta["user_id"], meta["class_id"], meta["source_id"], meta["title"]) == (
                str(TARGET.user_id),
                str(TARGET.class_id),
                str(TARGET.source_id),
                TARGET.title,
            )
            assert (
                str(TARGET.source_id) in r.document_id and r.point_id != donor[meta["chunk_index"]].point_id
            )
            assert not DONOR_FIELDS & ({str(v) for v in meta.values()} | {r.document_id, r.point_id})
            twin = donor[meta["chunk_index"]]
            assert (r.vector, r.document) == (twin.vector, twin.document)
            assert {k: meta.get(k) for k in CHUNK_FIELDS} == {k: twin.metadata.get(k) for k in CHUNK_FIELDS}


async def test_without_a_donor_the_upload_goes_the_normal_way() -> None:
    stores, ledger = [CopyStore()], ReuseLedger(donor=None)
    out, _ = await run(stores, ledger)

    (normal,) = out
    assert type(normal) is TextbookUploaded
    assert normal.source == TARGET and normal.storage_url == queued().storage_url
    assert ("fall_back", "chunking") in ledger.log
    assert stores[0].of(TARGET) == []


@pytest.mark.parametrize("short_store", [0, 1])
async def test_a_short_copy_in_either_store_is_removed_whole_and_falls_back(short_store: int) -> None:
    stores, ledger = [CopyStore(), CopyStore()], ReuseLedger()
    stores[short_store].short_by = 2
    out, _ = await run(stores, ledger)

    assert [type(e) for e in out] == [TextbookUploaded]
    assert ("fall_back", "chunking") in ledger.log
    assert not any(entry[0] == "complete" for entry in ledger.log if isinstance(entry, tuple))
    for store in stores:
        assert store.of(TARGET) == [], "no half copy stays behind"
        assert "promote" not in store.log, "a first generation is never promoted"
        assert len(store.of(DONOR)) == CHUNKS


async def test_a_target_deleted_during_the_copy_takes_the_copy_back() -> None:
    stores, ledger = [CopyStore(), CopyStore()], ReuseLedger(tombstone_during_copy=True)
    with pytest.raises(PermanentError) as refused:
        await run(stores, ledger)
    assert refused.value.code == "deleted"
    for store in stores:
        assert store.of(TARGET) == [] and "promote" not in store.log


async def test_a_redelivery_after_completion_does_nothing() -> None:
    stores, ledger = [CopyStore()], ReuseLedger(status="completed")
    out, _ = await run(stores, ledger)
    assert out == [] and stores[0].log == [] and ledger.log == []


async def test_a_redelivery_whose_job_completed_meanwhile_announces_nothing_twice() -> None:
    stores = [CopyStore()]
    ledger = ReuseLedger()
    first, _ = await run(stores, ledger)
    ledger.status = "processing-elsewhere"  # another delivery completed it between our check and our write
    again, _ = await run(stores, ledger)
    assert len(first) == 1 and again == []
    assert len(stores[0].of(TARGET)) == CHUNKS, "the same ids: a second copy overwrites, never doubles"


def test_a_reuse_in_progress_is_kept_for_the_reconciler_to_redrive() -> None:
    from shared.db.outbox import entry_for

    event = queued()
    entry = entry_for(event)
    assert entry is not None
    assert (entry.consumer, entry.source_id) == ("indexing", TARGET.source_id)
    assert ContentReuseQueued.model_validate_json(entry.payload) == event
