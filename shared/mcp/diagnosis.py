"""The MCP pipeline-diagnosis tools as plain typed functions over ports, bound to one user.

``diagnose_source`` says where one of the user's sources is: each stage with its attempts and last error, its
chunks as PostgreSQL, Qdrant and Chroma count them, its ``vector_id``, and a one-line verdict. ``why_not_found``
says where a source's best chunk ranks for a query in each store (Qdrant ranked as the search API ranks, Chroma by
exact cosine) and every reason it may not be found. ``qdrant_search`` is ``chroma_search`` over Qdrant.

Tenancy: a source is looked up with the bound user in the query itself; one that is not theirs (another
student's, shared with them or not: a diagnosis shows the owner's pipeline, errors and all, which sharing the
content does not grant) gets exactly the refusal a source that does not exist gets. Store reads always filter
on the bound user.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.db.jobs import JobRow, StageRow, stage_state
from shared.db.outbox import Pending
from shared.db.sources import RowState
from shared.events.models import CONTENT_TYPE_OF_KIND
from shared.mcp.tools import (
    CONTENT_TYPES,
    Hit,
    QueryEmbedder,
    SearchResult,
    ToolRefused,
    check_limit,
)
from shared.vectors.records import SEARCH_MODES, ScoreKind, SearchHit, SearchMode

RANK_DEPTH = 100
"""How deep why_not_found looks for a source's best chunk in each store's ranking."""
SHOWN_BY_DEFAULT = 5
"""Hits a search returns unless asked for more (the search API's and lmgpa search's default limit)."""
EXCERPT_CHARS = 200
MAX_BEST_SOURCES = 5
MAX_TITLE_MATCHES = 10


class SourceNotFound(ToolRefused):
    """Not one of the bound user's sources (whoever else's it may be)."""


def source_not_found_message(user_id: uuid.UUID) -> str:
    """The one refusal for every source that is not the user's (the id or title asked for is not echoed)."""
    return (
        f"no such source for user {user_id}: give the source_id (a UUID) of one of this user's sources, "
        "or its title (or part of it)"
    )


# ------------------------------------------------------------------------------------------------ the ports


@dataclass(frozen=True)
class StoreCount:
    """One source's chunks in one vector store: all of them, and those searches see (``visible``)."""

    total: int
    visible: int


class PipelineRecords(Protocol):
    """The port to PostgreSQL: the pipeline's job tables and the content rows (shared.db)."""

    async def job(self, *, user_id: uuid.UUID, source_id: uuid.UUID) -> JobRow | None:
        """The source's job with its stages, only if it is this user's."""

    async def jobs_titled(self, *, user_id: uuid.UUID, title: str, limit: int) -> list[JobRow]:
        """This user's jobs whose title is or contains ``title``, best match first."""

    async def generation(self, *, source_id: uuid.UUID) -> int:
        """The job's current generation (0 until a reprocess)."""

    async def indexed_chunks(self, *, source_id: uuid.UUID, generation: int) -> int:
        """Chunks of that generation recorded as written to both stores (ingest_batches)."""

    async def row(self, *, kind: str, source_id: uuid.UUID) -> RowState | None:
        """The content row's status column, vector_id and total_chunks."""

    async def pending_inputs(self, *, source_id: uuid.UUID) -> list[Pending]:
        """The source's stage inputs no consumer has applied (the reconciler's view)."""


class ChunkIndex(Protocol):
    """The port to one vector store (Qdrant or Chroma), every read filtered on the user."""

    store: str
    """"qdrant" or "chroma"."""

    def ranking(self, mode: SearchMode | None = None) -> str:
        """How this store ranks a query, in words (e.g. "sparse (BM25)", "dense (exact cosine)")."""

    async def count_source(
        self, *, user_id: uuid.UUID, class_id: uuid.UUID, content_type: str, source_id: uuid.UUID
    ) -> StoreCount:
        """How many chunks of the source the store holds, and how many of them are visible."""

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
        """The user's best visible chunks in the class, best first, as this store's search ranks them."""

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
        """The source's visible chunk that ranks best for the query (None if none matches at all)."""


# ---------------------------------------------------------------------------------------------- the results


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class StageReport(_Result):
    """One stage of the source."""

    stage: str
    status: str = Field(description="pending, processing, completed or failed (ingest_stages.status).")
    state: str = Field(description="waiting, working, stalled, done or failed (stalled: no sign of life).")
    attempts: int
    units_done: int
    units_total: int | None
    unit: str | None
    enqueued_at: str
    started_at: str | None
    finished_at: str | None
    heartbeat_at: str | None
    error_code: str | None
    error_message: str | None


class ChunkCounts(_Result):
    """The source's chunks as each place counts them."""

    postgres_job: int | None = Field(description="ingest_jobs.chunk_count, set when the job completed.")
    postgres_indexed: int = Field(
        description="Chunks of the current generation recorded in both stores (ingest_batches)."
    )
    postgres_row_total: int | None = Field(description="textbook_downloads.total_chunks (textbooks only).")
    qdrant_total: int
    qdrant_visible: int = Field(description="What a search sees (a reprocess's generation stays hidden).")
    chroma_total: int
    chroma_visible: int


class SourceDiagnosis(_Result):
    """Where a source of the user's is in the pipeline, and whether it is searchable."""

    source_id: str
    title: str | None
    kind: str
    content_type: str
    class_id: str
    status: str = Field(description="The job's status: processing, completed or failed.")
    state: str = Field(description="The status, or stalled when a processing source shows no sign of life.")
    stage: str = Field(description="The stage it is at (or failed at; indexing once completed).")
    attempts: int
    generation: int
    created_at: str
    updated_at: str
    last_progress_at: str = Field(description="Its latest sign of life (job, stage heartbeats, re-drives).")
    idle_seconds: float
    stall_seconds: float = Field(description="Idle this long counts as stalled (LMGPA_STALL_SECONDS).")
    redrives: int
    pending_inputs: list[str] = Field(description="Stage inputs published and not applied yet (topics).")
    error_code: str | None
    error_message: str | None
    row_status: str | None = Field(description="The content row's own status column (none for notes).")
    row_status_column: str | None
    vector_id: str | None = Field(description="The content row's vector_id (textbooks have none).")
    stages: list[StageReport]
    chunks: ChunkCounts
    verdict: str
    also_matching: list[str] = Field(
        default_factory=list, description="Other sources of the user's whose title matched too (id: title)."
    )


class StoreRank(_Result):
    """Where the source's best chunk is in one store's ranking of the query."""

    store: str
    ranking: str = Field(
        description="How the store ranked: the search API's mode for Qdrant, cosine for Chroma."
    )
    chunk_rank: int | None = Field(description=f"1 is first; None if not in the first {RANK_DEPTH} chunks.")
    source_rank: int | None = Field(description="Among the class's sources, by their best chunks.")
    sources_above: list[str] = Field(description="Titles of the sources ranked above it (at most 5).")
    best_score: float | None
    score_kind: str | None
    best_chunk_index: int | None
    best_document_id: str | None
    excerpt: str | None
    chunks: int
    visible_chunks: int


class RankedSource(_Result):
    """A source of the class, by its best chunk for the query."""

    source_id: str
    title: str | None
    content_type: str | None
    chunk_rank: int
    score: float
    excerpt: str


class WhyNotFound(_Result):
    """Why a query does (or does not) find a source, store by store."""

    query: str
    class_id: str
    source_id: str | None
    title: str | None
    status: str | None
    ranks: list[StoreRank] = Field(
        description="The source's best chunk in each store (when a source is named)."
    )
    best_sources: dict[str, list[RankedSource]] = Field(
        description=f"Per store, the class's {MAX_BEST_SOURCES} sources that rank best for the query."
    )
    reasons: list[str]


class QdrantHit(Hit):
    """A Qdrant search match; ``score`` is what ``score_kind`` says (only a cosine compares across queries)."""

    score_kind: ScoreKind


class QdrantSearchResult(SearchResult):
    """The best matches for a query in one class of the user's, from Qdrant, best first."""

    mode: str = Field(description="How Qdrant ranked: hybrid, dense or sparse.")
    hits: list[QdrantHit]  # type: ignore[assignment]


# ----------------------------------------------------------------------------------------- the pure logic


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def last_progress(job: JobRow, pending: Sequence[Pending] = ()) -> datetime:
    """The source's latest sign of life, as the reconciler reckons it (job update, any stage's enqueue, start,
    heartbeat or end, a re-drive)."""
    moments = [job.updated_at, job.last_redrive_at, *(p.last_progress_at for p in pending)]
    for s in job.stages:
        moments += [s.enqueued_at, s.started_at, s.heartbeat_at, s.finished_at]
    return max(m for m in moments if m is not None)


def _progress(stage: StageRow | None) -> str:
    if stage is None or not stage.units_total:
        return ""
    return f", {stage.units_done}/{stage.units_total} {stage.unit or 'units'} done"


def verdict(
    job: JobRow,
    counts: ChunkCounts,
    *,
    now: datetime,
    stall_seconds: float,
    pending: Sequence[Pending] = (),
) -> str:
    """One line: completed and searchable, failed at a stage with the error, stuck or in progress."""
    if job.status == "failed":
        return f"failed at {job.stage}: {job.error_code}: {job.error_message}"
    if job.status == "completed":
        expected = job.chunk_count if job.chunk_count is not None else counts.postgres_indexed
        if expected == 0:
            return "completed with no chunks: nothing of it can be found"
        gaps = [
            f"{name} has {visible} of {expected} visible" + (f" ({total} stored)" if total != visible else "")
            for name, visible, total in (
                ("Qdrant", counts.qdrant_visible, counts.qdrant_total),
                ("Chroma", counts.chroma_visible, counts.chroma_total),
            )
            if visible != expected
        ]
        if not gaps:
            noun = "chunk" if expected == 1 else "chunks"
            return f"completed and searchable: {expected} {noun} in PostgreSQL, Qdrant and Chroma"
        return f"completed, but {'; '.join(gaps)} chunks: searches miss what is not visible"
    stage = next((s for s in job.stages if s.stage == job.stage), None)
    since = (stage.started_at or stage.enqueued_at) if stage is not None else job.created_at
    idle = (now - last_progress(job, pending)).total_seconds()
    doing = "waiting for its worker" if stage is None or stage.status == "pending" else "working"
    if idle >= stall_seconds:
        redriven = f"; its input was re-driven {job.redrives} time(s)" if job.redrives else ""
        return (
            f"stuck in {job.stage} ({doing}{_progress(stage)}) since "
            f"{since.isoformat()}, no progress for {idle:.0f} s (stalled past {stall_seconds:.0f} s){redriven}"
        )
    return f"in progress: {job.stage} ({doing}{_progress(stage)}), last progress {idle:.0f} s ago"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """The start of a chunk's text on one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def rank_of(hits: Sequence[SearchHit], source_id: uuid.UUID) -> tuple[int | None, int | None, list[str]]:
    """The 1-based rank of the source's first chunk among the hits and among their sources, and the titles of
    the sources above it (None, None, [] if it is not among them)."""
    seen: list[str] = []
    titles: dict[str, str] = {}
    for position, hit in enumerate(hits, start=1):
        source = str(hit.metadata.get("source_id"))
        if source == str(source_id):
            return position, len(seen) + 1, [titles[s] for s in seen[:5]]
        if source not in titles:
            seen.append(source)
            titles[source] = str(hit.metadata.get("title") or source)
    return None, None, []


def best_sources(hits: Sequence[SearchHit], limit: int = MAX_BEST_SOURCES) -> list[RankedSource]:
    """The sources of the hits, each by its best (first) chunk, best first."""
    found: dict[str, RankedSource] = {}
    for position, hit in enumerate(hits, start=1):
        source = str(hit.metadata.get("source_id"))
        if source not in found:
            found[source] = RankedSource(
                source_id=source,
                title=_str(hit.metadata.get("title")),
                content_type=_str(hit.metadata.get("content_type")),
                chunk_rank=position,
                score=hit.score,
                excerpt=excerpt(hit.text),
            )
    return list(found.values())[:limit]


def store_rank(
    index_name: str,
    ranking: str,
    *,
    ranked: Sequence[SearchHit],
    best: SearchHit | None,
    count: StoreCount,
    source_id: uuid.UUID,
) -> StoreRank:
    """The source's place in one store's ranking, with its best chunk."""
    chunk_rank, source_rank, above = rank_of(ranked, source_id)
    top = next((h for h in ranked if str(h.metadata.get("source_id")) == str(source_id)), None) or best
    return StoreRank(
        store=index_name,
        ranking=ranking,
        chunk_rank=chunk_rank,
        source_rank=source_rank,
        sources_above=above,
        best_score=top.score if top else None,
        score_kind=top.score_kind if top else None,
        best_chunk_index=_int(top.metadata.get("chunk_index")) if top else None,
        best_document_id=top.document_id if top else None,
        excerpt=excerpt(top.text) if top else None,
        chunks=count.total,
        visible_chunks=count.visible,
    )


def reasons_not_found(
    job: JobRow,
    *,
    class_id: uuid.UUID,
    ranks: Sequence[StoreRank],
    state_line: str,
    search_mode: SearchMode,
) -> list[str]:
    """Every reason a search of this class for the query may not show the source (or that nothing stops it)."""
    reasons: list[str] = []
    if job.class_id != class_id:
        reasons.append(f"it is in class {job.class_id}, not in the class searched ({class_id})")
    if job.status != "completed":
        reasons.append(f"it is not completed: {state_line}")
    by_store = {r.store: r for r in ranks}
    if all(r.chunks == 0 for r in ranks):
        if job.status in ("pending", "processing"):
            reasons.append("it has no chunks in either store yet")
        else:
            reasons.append("it has no chunks in either store: nothing of it can be found")
    else:
        for r in ranks:
            others = [o.store for o in ranks if o.store != r.store and o.chunks > 0]
            if r.chunks == 0 and others:
                reasons.append(f"its chunks are only in {', '.join(others)}: {r.store} has none")
            elif r.chunks and r.visible_chunks == 0:
                reasons.append(
                    f"its {r.chunks} chunks in {r.store} are all hidden (visible=false): a reprocess's new "
                    "generation is shown only once it is complete"
                )
            elif r.visible_chunks < r.chunks:
                reasons.append(f"only {r.visible_chunks} of its {r.chunks} chunks in {r.store} are visible")
    for r in ranks:
        if r.visible_chunks == 0 or job.class_id != class_id:
            continue
        if r.chunk_rank is None:
            if r.best_score is None and r.store == "qdrant" and search_mode == "sparse":
                reasons.append(
                    "in qdrant (sparse: BM25 over the words) none of its chunks shares a word with the query "
                    "(after stemming and stop words): use its words, or search with mode dense or hybrid"
                )
            elif r.best_score is None:
                reasons.append(f"in {r.store} none of its chunks matches the query at all")
            else:
                reasons.append(
                    f"in {r.store} ({r.ranking}) its best chunk is not among the first {RANK_DEPTH} of the class "
                    f"(its score {r.best_score:.4f})"
                )
        elif r.chunk_rank > SHOWN_BY_DEFAULT:
            above = f" (above it: {', '.join(r.sources_above)})" if r.sources_above else ""
            reasons.append(
                f"in {r.store} ({r.ranking}) its best chunk ranks {r.chunk_rank}: a search showing "
                f"{SHOWN_BY_DEFAULT} hits misses it; {(r.source_rank or 1) - 1} other source(s) rank above it{above}"
            )
    qdrant, chroma = by_store.get("qdrant"), by_store.get("chroma")
    if qdrant and chroma and qdrant.chunk_rank == 1 and chroma.chunk_rank == 1 and not reasons:
        return ["nothing stops it: its best chunk ranks first in both stores"]
    if not reasons:
        reasons.append(
            "nothing stops it: it is completed, visible in both stores and ranks within the first "
            f"{SHOWN_BY_DEFAULT} hits where it ranks"
        )
    return reasons


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        raise ToolRefused(f"{what} must be a UUID") from None


# ---------------------------------------------------------------------------------------------- the tools


class DiagnosisTools:
    """diagnose_source, why_not_found and qdrant_search for one user: every answer is about their sources only."""

    def __init__(
        self,
        records: PipelineRecords,
        qdrant: ChunkIndex,
        chroma: ChunkIndex,
        embed_query: QueryEmbedder,
        *,
        user_id: uuid.UUID,
        stall_seconds: float,
        search_mode: SearchMode,
        qdrant_collection: str,
        clock: Any,
    ) -> None:
        self.records = records
        self.qdrant = qdrant
        self.chroma = chroma
        self.embed_query = embed_query
        self.user_id = user_id
        self.stall_seconds = stall_seconds
        self.search_mode: SearchMode = search_mode
        self.qdrant_collection = qdrant_collection
        self.clock = clock
        """Returns the current aware datetime."""

    async def _find(self, source_id: str | None, title: str | None) -> tuple[JobRow, list[JobRow]]:
        """The user's source by id or title (and the other title matches); SourceNotFound otherwise."""
        if (source_id is None) == (title is None or not title.strip()):
            raise ToolRefused("give exactly one of source_id and title")
        if source_id is not None:
            job = await self.records.job(user_id=self.user_id, source_id=_uuid(source_id, "source_id"))
            if job is None:
                raise SourceNotFound(source_not_found_message(self.user_id))
            return job, []
        assert title is not None
        found = await self.records.jobs_titled(
            user_id=self.user_id, title=title.strip(), limit=MAX_TITLE_MATCHES
        )
        found = [j for j in found if j.user_id == self.user_id]  # the query filters on it; a second look
        if not found:
            raise SourceNotFound(source_not_found_message(self.user_id))
        return found[0], found[1:]

    async def _counts(self, job: JobRow) -> tuple[ChunkCounts, int, RowState | None, StoreCount, StoreCount]:
        generation = await self.records.generation(source_id=job.source_id)
        content_type = CONTENT_TYPE_OF_KIND[job.kind]
        q, c = [
            await index.count_source(
                user_id=self.user_id,
                class_id=job.class_id,
                content_type=content_type,
                source_id=job.source_id,
            )
            for index in (self.qdrant, self.chroma)
        ]
        row = await self.records.row(kind=job.kind, source_id=job.source_id)
        counts = ChunkCounts(
            postgres_job=job.chunk_count,
            postgres_indexed=await self.records.indexed_chunks(
                source_id=job.source_id, generation=generation
            ),
            postgres_row_total=row.total_chunks if row else None,
            qdrant_total=q.total,
            qdrant_visible=q.visible,
            chroma_total=c.total,
            chroma_visible=c.visible,
        )
        return counts, generation, row, q, c

    async def diagnose_source(
        self, source_id: str | None = None, title: str | None = None
    ) -> SourceDiagnosis:
        """Where one of the user's sources is: stages, attempts, errors, chunk counts per store, a verdict."""
        job, others = await self._find(source_id, title)
        counts, generation, row, _, _ = await self._counts(job)
        pending = await self.records.pending_inputs(source_id=job.source_id)
        now = self.clock()
        stages = [
            StageReport(
                stage=s.stage,
                status=s.status,
                state=stage_state(s, now=now, stall_seconds=self.stall_seconds),
                attempts=s.attempts,
                units_done=s.units_done,
                units_total=s.units_total,
                unit=s.unit,
                enqueued_at=s.enqueued_at.isoformat(),
                started_at=_iso(s.started_at),
                finished_at=_iso(s.finished_at),
                heartbeat_at=_iso(s.heartbeat_at),
                error_code=s.error_code,
                error_message=s.error_message,
            )
            for s in job.stages
        ]
        progressed = last_progress(job, pending)
        idle = (now - progressed).total_seconds()
        stalled = job.status in ("pending", "processing") and idle >= self.stall_seconds
        return SourceDiagnosis(
            source_id=str(job.source_id),
            title=job.title,
            kind=job.kind,
            content_type=CONTENT_TYPE_OF_KIND[job.kind],
            class_id=str(job.class_id),
            status=job.status,
            state="stalled" if stalled else job.status,
            stage=job.stage,
            attempts=job.attempts,
            generation=generation,
            created_at=job.created_at.isoformat(),
            updated_at=job.updated_at.isoformat(),
            last_progress_at=progressed.isoformat(),
            idle_seconds=round(idle, 1),
            stall_seconds=self.stall_seconds,
            redrives=job.redrives,
            pending_inputs=sorted({p.event.topic for p in pending}),
            error_code=job.error_code,
            error_message=job.error_message,
            row_status=row.status if row else None,
            row_status_column=row.status_column if row else None,
            vector_id=row.vector_id if row else None,
            stages=stages,
            chunks=counts,
            verdict=verdict(job, counts, now=now, stall_seconds=self.stall_seconds, pending=pending),
            also_matching=[f"{j.source_id}: {j.title}" for j in others],
        )

    async def why_not_found(
        self, class_id: str, query: str, source_id: str | None = None, title: str | None = None
    ) -> WhyNotFound:
        """Where the source's best chunk ranks for the query in each store, and why it may not be found; without a
        source, which of the user's sources in the class rank best."""
        klass = _uuid(class_id, "class_id")
        if not query.strip():
            raise ToolRefused("query is empty")
        job: JobRow | None = None
        if source_id is not None or (title is not None and title.strip()):
            job, _ = await self._find(source_id, title)
        vector = await self.embed_query(query)
        ranked: dict[str, list[SearchHit]] = {}
        indexes = {"qdrant": self.qdrant, "chroma": self.chroma}
        for name, index in indexes.items():
            ranked[name] = [
                h
                for h in await index.ranked(
                    vector=vector,
                    query=query,
                    user_id=self.user_id,
                    class_id=klass,
                    content_types=list(CONTENT_TYPES),
                    limit=RANK_DEPTH,
                )
                if h.metadata.get("user_id") == str(self.user_id)  # the store filters on it; a second look
            ]
        best = {name: best_sources(hits) for name, hits in ranked.items()}
        if job is None:
            reasons = (
                ["no source of this user's in the class matches the query in either store"]
                if not any(ranked.values())
                else ["name a source (source_id or title) to see where it ranks and why it may not be found"]
            )
            return WhyNotFound(
                query=query,
                class_id=str(klass),
                source_id=None,
                title=None,
                status=None,
                ranks=[],
                best_sources=best,
                reasons=reasons,
            )
        counts, _, _, q_count, c_count = await self._counts(job)
        content_type = CONTENT_TYPE_OF_KIND[job.kind]
        ranks = []
        for name, index, count in (("qdrant", self.qdrant, q_count), ("chroma", self.chroma, c_count)):
            own_best = None
            if count.visible:
                own_best = await index.best_of_source(
                    vector=vector,
                    query=query,
                    user_id=self.user_id,
                    class_id=job.class_id,
                    content_type=content_type,
                    source_id=job.source_id,
                )
            ranks.append(
                store_rank(
                    name,
                    index.ranking(),
                    ranked=ranked[name] if job.class_id == klass else [],
                    best=own_best,
                    count=count,
                    source_id=job.source_id,
                )
            )
        pending = await self.records.pending_inputs(source_id=job.source_id)
        state_line = verdict(job, counts, now=self.clock(), stall_seconds=self.stall_seconds, pending=pending)
        return WhyNotFound(
            query=query,
            class_id=str(klass),
            source_id=str(job.source_id),
            title=job.title,
            status=job.status,
            ranks=ranks,
            best_sources=best,
            reasons=reasons_not_found(
                job, class_id=klass, ranks=ranks, state_line=state_line, search_mode=self.search_mode
            ),
        )

    async def qdrant_search(
        self,
        class_id: str,
        query: str,
        content_type: str | None = None,
        limit: int = 5,
        mode: str | None = None,
    ) -> QdrantSearchResult:
        """The user's best matches for a query in one class, from Qdrant ranked as the search API ranks."""
        klass = _uuid(class_id, "class_id")
        if content_type is not None and content_type not in CONTENT_TYPES:
            raise ToolRefused(f"content_type must be one of {', '.join(CONTENT_TYPES)} (or omitted for all)")
        if mode is not None and mode not in SEARCH_MODES:
            raise ToolRefused(f"mode must be one of {', '.join(SEARCH_MODES)} (or omitted for the service's)")
        if not query.strip():
            raise ToolRefused("query is empty")
        limit = check_limit(limit)
        chosen: SearchMode = next((m for m in SEARCH_MODES if m == mode), self.search_mode)
        content_types = [content_type] if content_type else list(CONTENT_TYPES)
        vector = await self.embed_query(query) if chosen != "sparse" else None
        found = await self.qdrant.ranked(
            vector=vector,
            query=query,
            user_id=self.user_id,
            class_id=klass,
            content_types=content_types,
            limit=limit,
            mode=chosen,
        )
        hits = [
            QdrantHit(
                document_id=h.document_id,
                text=h.text,
                metadata=dict(h.metadata),
                score=h.score,
                score_kind=h.score_kind,
                collection=self.qdrant_collection,
            )
            for h in found
            if h.metadata.get("user_id") == str(self.user_id) and h.metadata.get("visible") is True
        ]
        return QdrantSearchResult(
            query=query, class_id=str(klass), content_types=content_types, mode=chosen, hits=hits[:limit]
        )
