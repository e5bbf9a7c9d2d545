"""The diagnosis tools' logic with in-memory ports: verdicts, ranks, reasons, and the tenancy refusal."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.db.jobs import JobRow, StageRow, stage_state
from shared.db.outbox import OutboxEvent, Pending
from shared.db.sources import RowState
from shared.mcp.diagnosis import (
    RANK_DEPTH,
    ChunkCounts,
    DiagnosisTools,
    SourceNotFound,
    StoreCount,
    StoreRank,
    best_sources,
    rank_of,
    reasons_not_found,
    source_not_found_message,
    verdict,
)
from shared.mcp.tools import ToolRefused
from shared.vectors.records import SearchHit, SearchMode

BOUND = uuid.UUID("11111111-1111-4111-8111-111111111111")
OTHER = uuid.UUID("22222222-2222-4222-8222-222222222222")
CLASS = uuid.UUID("33333333-3333-4333-8333-333333333333")
NOW = datetime(2026, 12, 6, 6, 0, tzinfo=UTC)
T0 = NOW - timedelta(hours=1)
VOCABULARY = ("derivative", "cell", "war")


async def embed(text: str) -> list[float]:
    """A toy query embedding: which of three words the text mentions."""
    return [float(word in text.lower()) for word in VOCABULARY]


def stage(name: str, status: str = "completed", **changes: Any) -> StageRow:
    """A stage row as ingest_stages holds it."""
    row = StageRow(
        stage=name,
        status=status,
        attempts=1,
        units_done=0,
        units_total=None,
        unit=None,
        enqueued_at=T0,
        started_at=T0,
        finished_at=T0 if status in ("completed", "failed") else None,
        heartbeat_at=T0,
        error_code=None,
        error_message=None,
    )
    return replace(row, **changes)


def job(
    *,
    user: uuid.UUID = BOUND,
    status: str = "completed",
    stage_name: str = "indexing",
    title: str = "Calculus notes",
    chunks: int | None = 2,
    stages: Sequence[StageRow] = (),
    **changes: Any,
) -> JobRow:
    """A job row as ingest_jobs holds it."""
    row = JobRow(
        source_id=uuid.uuid4(),
        kind="note",
        user_id=user,
        class_id=CLASS,
        title=title,
        status=status,
        stage=stage_name,
        attempts=1,
        error_code=None,
        error_message=None,
        chunk_count=chunks if status == "completed" else None,
        correlation_id=None,
        created_at=T0,
        updated_at=T0,
        stages=tuple(stages) or (stage("upload"), stage("embedding"), stage("indexing")),
    )
    return replace(row, **changes)


def counts(
    n: int, *, qdrant: tuple[int, int] | None = None, chroma: tuple[int, int] | None = None
) -> ChunkCounts:
    """Chunk counts where every place agrees on n, unless a store's (total, visible) is given."""
    q, c = qdrant or (n, n), chroma or (n, n)
    return ChunkCounts(
        postgres_job=n,
        postgres_indexed=n,
        postgres_row_total=None,
        qdrant_total=q[0],
        qdrant_visible=q[1],
        chroma_total=c[0],
        chroma_visible=c[1],
    )


# ------------------------------------------------------------------------------------------------ verdicts


def test_a_completed_source_in_every_store_is_searchable() -> None:
    assert verdict(job(), counts(2), now=NOW, stall_seconds=300) == (
        "completed and searchable: 2 chunks in PostgreSQL, Qdrant and Chroma"
    )


def test_a_completed_source_missing_from_a_store_or_hidden_says_so() -> None:
    missing = verdict(job(), counts(2, qdrant=(0, 0)), now=NOW, stall_seconds=300)
    assert missing.startswith("completed, but Qdrant has 0 of 2 visible chunks")
    hidden = verdict(job(), counts(2, chroma=(2, 0)), now=NOW, stall_seconds=300)
    assert "Chroma has 0 of 2 visible (2 stored)" in hidden and "Qdrant" not in hidden
    assert verdict(job(chunks=0), counts(0), now=NOW, stall_seconds=300).startswith(
        "completed with no chunks"
    )


def test_a_failed_source_names_the_stage_and_the_error() -> None:
    failed = job(
        status="failed", stage_name="ocr", error_code="corrupt_image", error_message="x.jpg: unreadable"
    )
    assert (
        verdict(failed, counts(0), now=NOW, stall_seconds=300)
        == "failed at ocr: corrupt_image: x.jpg: unreadable"
    )


def test_a_source_with_no_sign_of_life_past_the_bound_is_stuck_else_in_progress() -> None:
    working = stage("embedding", "processing", units_done=3, units_total=10, unit="batches", heartbeat_at=T0)
    stuck = job(status="processing", stage_name="embedding", stages=(stage("upload"), working), redrives=2)
    line = verdict(stuck, counts(0), now=NOW, stall_seconds=300)
    assert line == (
        f"stuck in embedding (working, 3/10 batches done) since {T0.isoformat()}, no progress for 3600 s "
        "(stalled past 300 s); its input was re-driven 2 time(s)"
    )
    fresh = verdict(stuck, counts(0), now=T0 + timedelta(seconds=20), stall_seconds=300)
    assert fresh == "in progress: embedding (working, 3/10 batches done), last progress 20 s ago"
    waiting = job(status="processing", stage_name="ocr", stages=(stage("upload"), stage("ocr", "pending")))
    assert verdict(waiting, counts(0), now=NOW, stall_seconds=300).startswith(
        "stuck in ocr (waiting for its worker)"
    )


def test_the_reconcilers_signs_of_life_count_as_progress() -> None:
    stuck = job(status="processing", stage_name="ocr", stages=(stage("upload"), stage("ocr", "pending")))
    event = OutboxEvent(uuid.uuid4(), stuck.source_id, "ocr", "lmgpa.photo.uploaded.v1", b"k", b"{}")
    recent = Pending(
        event, "processing", "ocr", T0, NOW - timedelta(seconds=5), 1, NOW - timedelta(seconds=5)
    )
    assert verdict(stuck, counts(0), now=NOW, stall_seconds=300, pending=[recent]).startswith("in progress")


def test_stage_states() -> None:
    assert stage_state(stage("x"), now=NOW, stall_seconds=300) == "done"
    assert stage_state(stage("x", "failed"), now=NOW, stall_seconds=300) == "failed"
    assert stage_state(stage("x", "pending"), now=NOW, stall_seconds=300) == "waiting"
    assert stage_state(stage("x", "processing"), now=NOW, stall_seconds=300) == "stalled"
    assert (
        stage_state(stage("x", "processing"), now=T0 + timedelta(seconds=1), stall_seconds=300) == "working"
    )


# --------------------------------------------------------------------------------------------------- ranks


def hit(
    source: str, score: float, chunk: int = 0, *, user: uuid.UUID = BOUND, visible: bool = True
) -> SearchHit:
    """A store's hit with the pipeline's metadata."""
    return SearchHit(
        score=score,
        document_id=f"note_{source}_{chunk}",
        text=f"text of {source} chunk {chunk}",
        metadata={
            "user_id": str(user),
            "class_id": str(CLASS),
            "content_type": "notes",
            "source_id": source,
            "title": f"title {source}",
            "chunk_index": chunk,
            "visible": visible,
        },
    )


def test_rank_of_counts_chunks_and_sources_above() -> None:
    hits = [hit("a", 0.9), hit("a", 0.8, 1), hit("b", 0.7), hit("c", 0.6), hit("c", 0.5, 1)]
    assert rank_of(hits, "c") == (4, 3, ["title a", "title b"])  # type: ignore[arg-type]
    assert rank_of(hits, "zzz") == (None, None, [])  # type: ignore[arg-type]
    assert [(s.source_id, s.chunk_rank) for s in best_sources(hits)] == [("a", 1), ("b", 3), ("c", 4)]


def rank(
    store: str, *, chunks: int = 2, visible: int = 2, chunk_rank: int | None = 1, score: float | None = 0.9
) -> StoreRank:
    """One store's rank of a source."""
    return StoreRank(
        store=store,
        ranking="r",
        chunk_rank=chunk_rank,
        source_rank=chunk_rank,
        sources_above=[],
        best_score=score,
        score_kind="cosine",
        best_chunk_index=0,
        best_document_id="d",
        excerpt="e",
        chunks=chunks,
        visible_chunks=visible,
    )


def reasons(
    ranks: list[StoreRank], *, the_job: JobRow | None = None, mode: SearchMode = "sparse"
) -> list[str]:
    """reasons_not_found for a completed job in CLASS."""
    return reasons_not_found(the_job or job(), class_id=CLASS, ranks=ranks, state_line="S", search_mode=mode)


def test_reasons_name_each_way_a_source_goes_unfound() -> None:
    assert reasons([rank("qdrant"), rank("chroma")]) == [
        "nothing stops it: its best chunk ranks first in both stores"
    ]
    only = reasons([rank("qdrant", chunks=0, visible=0, chunk_rank=None, score=None), rank("chroma")])
    assert only == ["its chunks are only in chroma: qdrant has none"]
    hidden = reasons([rank("qdrant", visible=0, chunk_rank=None, score=None), rank("chroma")])
    assert hidden[0].startswith("its 2 chunks in qdrant are all hidden (visible=false)")
    low = reasons([rank("qdrant", chunk_rank=9), rank("chroma")])
    assert low[0].startswith("in qdrant (r) its best chunk ranks 9: a search showing 5 hits misses it")
    no_words = reasons([rank("qdrant", chunk_rank=None, score=None), rank("chroma")])
    assert no_words[0].startswith("in qdrant (sparse: BM25 over the words) none of its chunks shares a word")
    deep = reasons([rank("qdrant"), rank("chroma", chunk_rank=None, score=0.1)])
    assert deep == [
        f"in chroma (r) its best chunk is not among the first {RANK_DEPTH} of the class (its score 0.1000)"
    ]
    failed = job(status="failed", stage_name="ocr", chunks=None)
    got = reasons(
        [
            rank("qdrant", chunks=0, visible=0, chunk_rank=None, score=None),
            rank("chroma", chunks=0, visible=0, chunk_rank=None, score=None),
        ],
        the_job=failed,
    )
    assert got == ["it is not completed: S", "it has no chunks in either store: nothing of it can be found"]
    stuck = job(status="processing", stage_name="ocr")
    none = rank("qdrant", chunks=0, visible=0, chunk_rank=None, score=None)
    assert reasons([none, none.model_copy(update={"store": "chroma"})], the_job=stuck)[1] == (
        "it has no chunks in either store yet"
    )
    elsewhere = reasons(
        [rank("qdrant", chunk_rank=None), rank("chroma", chunk_rank=None)], the_job=job(class_id=uuid.uuid4())
    )
    assert len(elsewhere) == 1 and elsewhere[0].startswith("it is in class ")


# ------------------------------------------------------------------------------------------- fakes of ports


class FakeRecords:
    """PipelineRecords in memory."""

    def __init__(self, jobs: Sequence[JobRow]) -> None:
        self.jobs = {j.source_id: j for j in jobs}
        self.calls: list[str] = []

    async def job(self, *, user_id: uuid.UUID, source_id: uuid.UUID) -> JobRow | None:
        """The job if it is the user's."""
        self.calls.append("job")
        found = self.jobs.get(source_id)
        return found if found is not None and found.user_id == user_id else None

    async def jobs_titled(self, *, user_id: uuid.UUID, title: str, limit: int) -> list[JobRow]:
        """The user's jobs whose title contains it, exact first."""
        self.calls.append("jobs_titled")
        mine = [
            j for j in self.jobs.values() if j.user_id == user_id and title.lower() in (j.title or "").lower()
        ]
        return sorted(mine, key=lambda j: (j.title or "").lower() != title.lower())[:limit]

    async def generation(self, *, source_id: uuid.UUID) -> int:
        """Always the first run."""
        return 0

    async def indexed_chunks(self, *, source_id: uuid.UUID, generation: int) -> int:
        """What the job says."""
        return self.jobs[source_id].chunk_count or 0

    async def row(self, *, kind: str, source_id: uuid.UUID) -> RowState | None:
        """A note's row once indexed."""
        done = self.jobs[source_id].status == "completed"
        return RowState(
            status_column=None,
            status=None,
            vector_id=f"note_{source_id}" if done else None,
            total_chunks=None,
        )

    async def pending_inputs(self, *, source_id: uuid.UUID) -> list[Pending]:
        """Nothing pending."""
        return []


class FakeIndex:
    """A ChunkIndex in memory: chunks with toy vectors; ranks by dot product."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.chunks: list[tuple[SearchHit, list[float]]] = []
        self.calls: list[str] = []
        self.leak = False
        """Misbehave: return every user's chunks (the tools must drop them)."""

    def ranking(self, mode: SearchMode | None = None) -> str:
        """Dot product."""
        return f"{mode or 'dense'} (dot)"

    def add(
        self, source: uuid.UUID, chunk: int, text: str, *, user: uuid.UUID = BOUND, visible: bool = True
    ) -> None:
        """One chunk of a source."""
        h = hit(str(source), 0.0, chunk, user=user, visible=visible)
        self.chunks.append((replace(h, text=text), [float(w in text.lower()) for w in VOCABULARY]))

    def _scored(self, vector: Sequence[float] | None, keep: Any) -> list[SearchHit]:
        scored = [
            replace(h, score=sum(a * b for a, b in zip(vector or [1, 1, 1], v, strict=True)))
            for h, v in self.chunks
            if keep(h.metadata)
        ]
        return sorted((h for h in scored if h.score > 0), key=lambda h: -h.score)

    async def count_source(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID, content_type: str, source_id: uuid.UUID
    ) -> StoreCount:
        """The source's chunks of this user."""
        self.calls.append("count_source")
        mine = [
            h
            for h, _ in self.chunks
            if h.metadata["user_id"] == str(user_id) and h.metadata["source_id"] == str(source_id)
        ]
        return StoreCount(total=len(mine), visible=sum(1 for h in mine if h.metadata["visible"]))

    async def ranked(
        self,
        *,
        vector: Sequence[float] | None,
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_types: Sequence[str],
        limit: int,
        mode: SearchMode | None = None,
    ) -> list[SearchHit]:
        """The user's visible chunks of the class, best first."""
        self.calls.append(f"ranked:{mode}:{vector is not None}")
        return self._scored(
            vector,
            lambda m: (
                (self.leak or m["user_id"] == str(user_id))
                and m["visible"]
                and m["class_id"] == str(class_id)
            ),
        )[:limit]

    async def best_of_source(
        self,
        *,
        vector: Sequence[float],
        query: str,
        user_id: uuid.UUID,
        class_id: uuid.UUID,
        content_type: str,
        source_id: uuid.UUID,
    ) -> SearchHit | None:
        """The source's best visible chunk."""
        self.calls.append("best_of_source")
        found = self._scored(
            vector,
            lambda m: m["user_id"] == str(user_id) and m["source_id"] == str(source_id) and m["visible"],
        )
        return found[0] if found else None


def make_tools(
    records: FakeRecords, qdrant: FakeIndex, chroma: FakeIndex, user: uuid.UUID = BOUND
) -> DiagnosisTools:
    """The tools over fakes, at NOW."""
    return DiagnosisTools(
        records,
        qdrant,
        chroma,
        embed,
        user_id=user,
        stall_seconds=300,
        search_mode="sparse",
        qdrant_collection="chunks",
        clock=lambda: NOW,
    )


@pytest.fixture
def world() -> tuple[DiagnosisTools, FakeRecords, FakeIndex, FakeIndex, dict[str, JobRow]]:
    """The bound user's calculus and biology notes (in both stores), and another user's calculus note."""
    calculus, biology = job(title="Calculus notes"), job(title="Cell biology")
    theirs = job(user=OTHER, title="Calculus notes (theirs)")
    records = FakeRecords([calculus, biology, theirs])
    qdrant, chroma = FakeIndex("qdrant"), FakeIndex("chroma")
    for index in (qdrant, chroma):
        index.add(calculus.source_id, 0, "The derivative is a rate")
        index.add(calculus.source_id, 1, "Derivative rules and the war of notations")
        index.add(biology.source_id, 0, "The cell membrane")
        index.add(theirs.source_id, 0, "Derivative derivative", user=OTHER)
    return (
        make_tools(records, qdrant, chroma),
        records,
        qdrant,
        chroma,
        {"calculus": calculus, "biology": biology, "theirs": theirs},
    )


async def test_diagnose_by_id_or_title(world: Any) -> None:
    tools, _, _, _, jobs = world
    by_id = await tools.diagnose_source(source_id=str(jobs["calculus"].source_id))
    assert by_id.verdict == "completed and searchable: 2 chunks in PostgreSQL, Qdrant and Chroma"
    assert by_id.vector_id == f"note_{jobs['calculus'].source_id}" and by_id.state == "completed"
    assert [s.state for s in by_id.stages] == ["done", "done", "done"]
    by_title = await tools.diagnose_source(title="  cell ")
    assert by_title.source_id == str(jobs["biology"].source_id) and by_title.also_matching == []
    with pytest.raises(ToolRefused, match="exactly one"):
        await tools.diagnose_source()
    with pytest.raises(ToolRefused, match="exactly one"):
        await tools.diagnose_source(source_id=str(jobs["biology"].source_id), title="Cell biology")
    with pytest.raises(ToolRefused, match="source_id must be a UUID"):
        await tools.diagnose_source(source_id="note_123")


async def test_another_users_source_is_refused_like_a_missing_one_before_any_store_is_asked(
    world: Any,
) -> None:
    tools, _, qdrant, chroma, jobs = world
    messages = set()
    for arguments in (
        {"source_id": str(jobs["theirs"].source_id)},
        {"source_id": str(uuid.uuid4())},
        {"title": "Calculus notes (theirs)"},
        {"title": "nothing like it"},
    ):
        with pytest.raises(SourceNotFound) as refused:
            await tools.diagnose_source(**arguments)
        messages.add(str(refused.value))
    for source in (jobs["theirs"].source_id, uuid.uuid4()):
        with pytest.raises(SourceNotFound) as refused:
            await tools.why_not_found(str(CLASS), "derivative", str(source))
        messages.add(str(refused.value))
    assert messages == {source_not_found_message(BOUND)}
    assert str(OTHER) not in messages.pop()
    assert qdrant.calls == chroma.calls == [], "no store is asked about a source that is not the user's"


async def test_why_not_found_ranks_the_source_in_each_store(world: Any) -> None:
    tools, _, qdrant, _, jobs = world
    found = await tools.why_not_found(str(CLASS), "derivative", str(jobs["calculus"].source_id))
    assert [(r.store, r.chunk_rank, r.source_rank) for r in found.ranks] == [
        ("qdrant", 1, 1),
        ("chroma", 1, 1),
    ]
    assert found.reasons == ["nothing stops it: its best chunk ranks first in both stores"]
    assert str(jobs["theirs"].source_id) not in found.model_dump_json()

    # Gone from Qdrant: the reason says so.
    qdrant.chunks = [
        c for c in qdrant.chunks if c[0].metadata["source_id"] != str(jobs["calculus"].source_id)
    ]
    gone = await tools.why_not_found(str(CLASS), "derivative", str(jobs["calculus"].source_id))
    assert gone.reasons == ["its chunks are only in chroma: qdrant has none"]

    by_title = await tools.why_not_found(str(CLASS), "derivative", title="calculus")
    assert by_title.source_id == str(jobs["calculus"].source_id)
    with pytest.raises(SourceNotFound):
        await tools.why_not_found(str(CLASS), "derivative", title="Calculus notes (theirs)")

    anywhere = await tools.why_not_found(str(CLASS), "cell")
    assert anywhere.ranks == [] and [s.title for s in anywhere.best_sources["chroma"]] == [
        f"title {jobs['biology'].source_id}"
    ]


async def test_qdrant_search_drops_what_is_not_the_users_and_checks_its_arguments(world: Any) -> None:
    tools, _, qdrant, _, _ = world
    qdrant.leak = True
    found = await tools.qdrant_search(str(CLASS), "derivative", limit=10)
    assert found.mode == "sparse" and qdrant.calls == ["ranked:sparse:False"], "BM25 alone needs no embedding"
    assert found.hits and {h.metadata["user_id"] for h in found.hits} == {str(BOUND)}
    assert all(h.collection == "chunks" for h in found.hits)
    dense = await tools.qdrant_search(str(CLASS), "derivative", mode="dense")
    assert dense.mode == "dense" and qdrant.calls[-1] == "ranked:dense:True"
    for arguments, words in (
        ({"class_id": "x", "query": "q"}, "class_id must be a UUID"),
        ({"class_id": str(CLASS), "query": " "}, "query is empty"),
        ({"class_id": str(CLASS), "query": "q", "mode": "bm25"}, "mode must be one of"),
        ({"class_id": str(CLASS), "query": "q", "content_type": "note"}, "content_type must be one of"),
        ({"class_id": str(CLASS), "query": "q", "limit": 0}, "limit must be"),
    ):
        with pytest.raises(ToolRefused, match=words):
            await tools.qdrant_search(**arguments)
