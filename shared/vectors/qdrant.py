"""Qdrant: one collection for every chunk, tenant-indexed by user, filtered on the tenant in every query.

Every point has two named vectors: ``dense`` (the embedding model's) and ``bm25`` (a sparse BM25 vector of the
chunk's words with Qdrant's IDF modifier, computed by the server itself from the text: ``qdrant/bm25``, offline).
A search ranks by either, or by both fused with the Query API (prefetch + RRF); BM25 alone is the default, as
measured by ``make bench-retrieval``.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from shared.errors import PermanentError, PipelineError, TransientError
from shared.events.models import SourceRef
from shared.settings import Settings
from shared.vectors.records import (
    DEFAULT_SEARCH_MODE,
    DonorVectors,
    ScoreKind,
    SearchHit,
    SearchMode,
    SharedSource,
    VectorRecord,
    newest_generation_only,
    rekeyed,
)

UPSERT_BATCH = 128
DENSE = "dense"
"""The named vector of the embedding model."""
BM25 = "bm25"
"""The named sparse vector: BM25 of the chunk's words, weighted by the collection's IDF (``Modifier.IDF``)."""
BM25_MODEL = "qdrant/bm25"
"""Qdrant's own BM25 (1.15+): the server tokenises, stems (English Snowball) and drops stop words, no network."""
PREFETCH_LIMIT = 50
"""Candidates each side of a hybrid search brings to the fusion (more if the search asks for more)."""
RRF = models.FusionQuery(fusion=models.Fusion.RRF)
DBSF = models.FusionQuery(fusion=models.Fusion.DBSF)
DEFAULT_FUSION = RRF
"""How a hybrid search fuses its two rankings (measured against DBSF: make bench-retrieval)."""
_GRPC_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
_GRPC_REFUSED = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)
_HTTP_TRANSIENT = frozenset({408, 429})
"""Request timeout and too many requests: Qdrant busy, not the request wrong."""


def _reason(error: UnexpectedResponse) -> str:
    """Qdrant's own words for a refusal (its JSON status.error), else the raw body, short."""
    try:
        detail = error.structured().get("status", {})
        if isinstance(detail, dict) and detail.get("error"):
            return str(detail["error"])[:300]
    except ValueError:
        pass
    return error.content.decode("utf-8", "replace")[:300]


PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    "user_id": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    "class_id": models.PayloadSchemaType.KEYWORD,
    "content_type": models.PayloadSchemaType.KEYWORD,
    "source_id": models.PayloadSchemaType.KEYWORD,
    "visible": models.PayloadSchemaType.BOOL,
    "generation": models.PayloadSchemaType.INTEGER,
}
"""Every field a query or a delete filters on; ``user_id`` is the tenant (Qdrant's multitenancy guidance)."""


@contextmanager
def _transient_when_down() -> Iterator[None]:
    """Qdrant unreachable, restarting or refusing for load is transient (retry), over REST or gRPC; a request
    it refuses as such (any other 4xx: a wrong vector size, a missing collection) is permanent, with its reason:
    retrying the same request cannot help, and redelivering it five times only hides the cause."""
    try:
        yield
    except UnexpectedResponse as error:
        status = error.status_code
        if status is not None and 400 <= status < 500 and status not in _HTTP_TRANSIENT:
            raise PermanentError(
                "qdrant_rejected", f"Qdrant refused the request ({status}): {_reason(error)}"
            ) from error
        raise TransientError("qdrant_unavailable", str(error)[:300]) from error
    except (ResponseHandlingException, httpx.TransportError) as error:
        raise TransientError("qdrant_unavailable", str(error)[:300]) from error
    except grpc.aio.AioRpcError as error:
        if error.code() in _GRPC_TRANSIENT:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error
        if error.code() in _GRPC_REFUSED:
            raise PermanentError(
                "qdrant_rejected", f"Qdrant refused the request: {error.details()}"[:400]
            ) from error
        raise


def make_qdrant_client(settings: Settings) -> AsyncQdrantClient:
    """A client for the configured server (REST, or gRPC if preferred), or local mode on a folder (one process
    only, brute force: only when LMGPA_QDRANT_PATH is set on purpose)."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return AsyncQdrantClient(
            url=settings.qdrant_url,
            api_key=key,
            timeout=math.ceil(settings.store_timeout_seconds),  # the client takes whole seconds: never 0
            prefer_grpc=settings.qdrant_prefer_grpc,
            grpc_port=settings.qdrant_grpc_port,
        )
    if settings.qdrant_path:
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        return AsyncQdrantClient(path=str(settings.qdrant_path))
    raise ValueError("set LMGPA_QDRANT_URL (a server) or LMGPA_QDRANT_PATH (local mode)")


class CollectionLayoutError(PipelineError):
    """The collection exists with vectors other than the ones this code writes and reads (an older layout, another
    model's size): using it would mix layouts or fail on every request, so nothing starts on it."""

    def __init__(self, collection: str, found: str, wanted: str) -> None:
        super().__init__(
            "qdrant_collection_layout",
            f"the Qdrant collection {collection!r} has {found}, this version needs {wanted}; set "
            f"LMGPA_QDRANT_COLLECTION to a new name (the indexing worker creates it; reprocess the sources to fill "
            f"it), or delete the collection and reprocess every source into it",
        )


def _match(key: str, value: uuid.UUID | str | bool) -> models.FieldCondition:
    return models.FieldCondition(
        key=key, match=models.MatchValue(value=value if isinstance(value, bool) else str(value))
    )


def _content_type(content_type: str | Sequence[str]) -> models.FieldCondition:
    if isinstance(content_type, str):
        return _match("content_type", content_type)
    return models.FieldCondition(
        key="content_type", match=models.MatchAny(any=[str(c) for c in content_type])
    )


def _filter(
    *,
    user_id: uuid.UUID | str,
    class_id: uuid.UUID | str | None = None,
    content_type: str | Sequence[str] | None = None,
    source_id: uuid.UUID | str | None = None,
    visible_only: bool = False,
) -> models.Filter:
    must: list[models.Condition] = [_match("user_id", user_id)]
    for key, value in (("class_id", class_id), ("source_id", source_id)):
        if value is not None:
            must.append(_match(key, value))
    if content_type is not None:
        must.append(_content_type(content_type))
    if visible_only:
        must.append(_match("visible", True))
    return models.Filter(must=must)


def search_filter(
    *,
    user_id: uuid.UUID | str,
    class_id: uuid.UUID | str | None = None,
    content_type: str | Sequence[str] | None = None,
    shared: Sequence[SharedSource] = (),
) -> models.Filter:
    """What a search may read: the asker's visible chunks (in one class if given) or, if any are shared with them,
    the visible chunks of exactly those sources, each under the user who shares it. Every key is payload-indexed
    (the collection's strict mode refuses any other)."""
    if not shared:
        return _filter(user_id=user_id, class_id=class_id, content_type=content_type, visible_only=True)
    by_owner: dict[str, set[str]] = defaultdict(set)
    for share in shared:
        by_owner[str(share.shared_by)].add(str(share.source_id))
    mine = _filter(user_id=user_id, class_id=class_id)
    theirs = [
        models.Filter(
            must=[
                _match("user_id", owner),
                models.FieldCondition(key="source_id", match=models.MatchAny(any=sorted(sources))),
            ]
        )
        for owner, sources in sorted(by_owner.items())
        if owner != str(user_id)  # one's own sources are in already, whatever a row says
    ]
    must: list[models.Condition] = [_match("visible", True)]
    if content_type is not None:
        must.append(_content_type(content_type))
    return models.Filter(must=must, should=[mine, *theirs])


def query_request(
    *,
    mode: SearchMode,
    vector: Sequence[float] | None,
    query_text: str | None,
    query_filter: models.Filter,
    limit: int,
    fusion: models.FusionQuery = DEFAULT_FUSION,
) -> dict[str, Any]:
    """The arguments of ``query_points`` for one search: one ranking (dense or BM25), or both prefetched under the
    same filter and fused. The filter is on every prefetch and on the fusion, so no side reads beyond it."""
    if mode in ("dense", "hybrid") and vector is None:
        raise ValueError(f"a {mode} search needs the query's vector")
    if mode in ("sparse", "hybrid") and not query_text:
        raise ValueError(f"a {mode} search needs the query's text")
    text = models.Document(text=query_text or "", model=BM25_MODEL)
    if mode == "dense":
        return {"query": list(vector or ()), "using": DENSE, "query_filter": query_filter, "limit": limit}
    if mode == "sparse":
        return {"query": text, "using": BM25, "query_filter": query_filter, "limit": limit}
    depth = max(PREFETCH_LIMIT, limit)
    return {
        "prefetch": [
            models.Prefetch(query=list(vector or ()), using=DENSE, filter=query_filter, limit=depth),
            models.Prefetch(query=text, using=BM25, filter=query_filter, limit=depth),
        ],
        "query": fusion,
        "query_filter": query_filter,
        "limit": limit,
    }


def score_kind(mode: SearchMode, fusion: models.FusionQuery = DEFAULT_FUSION) -> ScoreKind:
    """What the scores of a search in this mode are."""
    if mode == "dense":
        return "cosine"
    if mode == "sparse":
        return "bm25"
    return "dbsf" if fusion.fusion == models.Fusion.DBSF else "rrf"


def dense_vector(point: models.Record | models.ScoredPoint) -> list[float]:
    """The embedding of a point read with its vectors."""
    vectors = point.vector
    dense = vectors.get(DENSE) if isinstance(vectors, dict) else None
    if not isinstance(dense, list):
        raise ValueError(f"point {point.id} was read without its {DENSE!r} vector")
    return [float(v) for v in dense if isinstance(v, float | int)]


class QdrantStore:
    """The production vector store."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        collection: str,
        dimensions: int,
        indexing_threshold_kb: int | None = None,
        search_mode: SearchMode = DEFAULT_SEARCH_MODE,
        bm25: bool = True,
        fusion: models.FusionQuery = DEFAULT_FUSION,
    ) -> None:
        self.client = client
        self.collection = collection
        self.dimensions = dimensions
        self.indexing_threshold_kb = indexing_threshold_kb
        self.bm25 = bm25
        """Whether points carry the BM25 vector: always on a server; local mode cannot compute it (no server)."""
        self.search_mode: SearchMode = search_mode if bm25 else "dense"
        self.fusion = fusion
        self._layout_checked = False

    @classmethod
    def from_settings(cls, client: AsyncQdrantClient, settings: Settings) -> QdrantStore:
        """The store of the configured collection."""
        return cls(
            client,
            collection=settings.qdrant_collection,
            dimensions=settings.embedding_dimensions,
            indexing_threshold_kb=settings.qdrant_indexing_threshold_kb,
            search_mode=settings.search_mode,
            bm25=settings.qdrant_path is None or bool(settings.qdrant_url),
        )

    async def ensure_collection(self) -> None:
        """Create the collection and its payload indexes if missing (idempotent); refuse one of another layout."""
        with _transient_when_down():
            if not await self.client.collection_exists(self.collection):
                await self._create_collection()
            await self.check_layout()
            for field_name, schema in PAYLOAD_INDEXES.items():
                await self.client.create_payload_index(
                    self.collection, field_name, field_schema=schema, wait=True
                )

    async def _create_collection(self) -> None:
        """Create the collection; one created meanwhile by another process (the indexing workers and the
        search API all ensure it as they start) is not an error: check_layout then judges what it holds."""
        try:
            await self.client.create_collection(
                self.collection,
                vectors_config={
                    DENSE: models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE)
                },
                sparse_vectors_config=(
                    {BM25: models.SparseVectorParams(modifier=models.Modifier.IDF)} if self.bm25 else None
                ),
                optimizers_config=(
                    None
                    if self.indexing_threshold_kb is None
                    else models.OptimizersConfigDiff(indexing_threshold=self.indexing_threshold_kb)
                ),
                # The server refuses a filter on a field without a payload index instead of scanning.
                strict_mode_config=models.StrictModeConfig(
                    enabled=True, unindexed_filtering_retrieve=False, unindexed_filtering_update=False
                ),
            )
        except (UnexpectedResponse, grpc.aio.AioRpcError) as error:
            conflict = (
                error.status_code == 409
                if isinstance(error, UnexpectedResponse)
                else error.code() == grpc.StatusCode.ALREADY_EXISTS
            )
            if not (conflict and await self.client.collection_exists(self.collection)):
                raise

    async def check_layout(self) -> bool:
        """Whether the collection exists; raises CollectionLayoutError if it holds other vectors than these."""
        with _transient_when_down():
            if not await self.client.collection_exists(self.collection):
                return False
            params = (await self.client.get_collection(self.collection)).config.params
        wanted = f"a {self.dimensions}-d cosine vector {DENSE!r}" + (
            f" and a sparse {BM25!r} vector with the IDF modifier" if self.bm25 else ""
        )
        vectors = params.vectors
        if not isinstance(vectors, dict):
            size = getattr(vectors, "size", None)
            found = (
                f"one unnamed {size}-d vector (the layout before hybrid search)"
                if size
                else "no dense vector"
            )
            raise CollectionLayoutError(self.collection, found, wanted)
        dense = vectors.get(DENSE)
        if dense is None or dense.size != self.dimensions or dense.distance != models.Distance.COSINE:
            found = "named vectors " + ", ".join(
                f"{name!r} ({v.size}-d {getattr(v.distance, 'value', v.distance)})"
                for name, v in vectors.items()
            )
            raise CollectionLayoutError(self.collection, found or "no dense vector", wanted)
        sparse = (params.sparse_vectors or {}).get(BM25)
        if self.bm25 and (sparse is None or sparse.modifier != models.Modifier.IDF):
            found = (
                f"no sparse {BM25!r} vector"
                if sparse is None
                else f"a {BM25!r} vector without the IDF modifier"
            )
            raise CollectionLayoutError(self.collection, found, wanted)
        self._layout_checked = True
        return True

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Write points (same ids overwrite) and wait until they are durable."""
        with _transient_when_down():
            for start in range(0, len(records), UPSERT_BATCH):
                batch = records[start : start + UPSERT_BATCH]
                await self.client.upsert(
                    self.collection,
                    points=[
                        models.PointStruct(
                            id=r.point_id,
                            vector=self._vectors(r),
                            payload={**r.metadata, "document_id": r.document_id, "text": r.document},
                        )
                        for r in batch
                    ],
                    wait=True,
                )

    def _vectors(self, record: VectorRecord) -> dict[str, Any]:
        """The point's named vectors: the embedding, and the chunk's text for the server to turn into BM25."""
        vectors: dict[str, Any] = {DENSE: record.vector}
        if self.bm25:
            vectors[BM25] = models.Document(text=record.document, model=BM25_MODEL)
        return vectors

    async def search(
        self,
        vector: Sequence[float] | None = None,
        *,
        query_text: str | None = None,
        mode: SearchMode | None = None,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        content_type: str | Sequence[str] | None = None,
        shared: Sequence[SharedSource] = (),
        limit: int = 5,
    ) -> list[SearchHit]:
        """Best visible chunks of one user's content (and of exactly the sources shared with them, if given), never
        anyone else's; each source's newest generation. With only a vector the search is dense; with the query's
        text too, it is the store's mode (LMGPA_SEARCH_MODE) unless ``mode`` says otherwise."""
        chosen: SearchMode = mode or (self.search_mode if query_text else "dense")
        if chosen != "dense" and not self.bm25:
            raise ValueError(f"a {chosen} search needs BM25 vectors, which only a Qdrant server computes")
        if not self._layout_checked:
            await self.check_layout()
        request = query_request(
            mode=chosen,
            vector=vector,
            query_text=query_text,
            query_filter=search_filter(
                user_id=user_id, class_id=class_id, content_type=content_type, shared=shared
            ),
            # Room for a reprocess's second generation, visible for the moment between its two steps.
            limit=limit * 2,
            fusion=self.fusion,
        )
        with _transient_when_down():
            response = await self.client.query_points(self.collection, **request, with_payload=True)
        kind = score_kind(chosen, self.fusion)
        hits = []
        for point in response.points:
            payload: dict[str, Any] = dict(point.payload or {})
            text = str(payload.pop("text", ""))
            hits.append(
                SearchHit(
                    score=point.score,
                    document_id=str(payload.get("document_id")),
                    text=text,
                    metadata=payload,
                    score_kind=kind,
                )
            )
        return newest_generation_only(hits)[:limit]

    async def payload_schema(self) -> dict[str, str]:
        """The payload indexes the server really has: field name -> index type."""
        info = await self.client.get_collection(self.collection)
        return {
            name: str(getattr(field.data_type, "value", field.data_type))
            for name, field in info.payload_schema.items()
        }

    async def points_of_source(
        self, *, user_id: uuid.UUID | str, source_id: uuid.UUID | str
    ) -> list[models.Record]:
        """Every point of one source (for checks and debugging)."""
        records: list[models.Record] = []
        offset: Any = None
        while True:
            page, offset = await self.client.scroll(
                self.collection,
                scroll_filter=_filter(user_id=user_id, source_id=source_id),
                limit=256,
                offset=offset,
                with_payload=True,
                with_vectors=True,
            )
            records.extend(page)
            if offset is None:
                return records

    async def copy_source(self, donor: DonorVectors, target: SourceRef) -> int:
        """Copy one generation of a donor's points (the dense and the BM25 vector as stored, the chunk's text and
        content fields) under the target's ids, owner, class and title, visible as a first generation is; returns
        how many were copied."""
        flt = _filter(user_id=donor.user_id, source_id=donor.source_id)
        this = models.FieldCondition(key="generation", match=models.MatchValue(value=donor.generation))
        flt = models.Filter(must=[*(flt.must or []), this])
        copied = 0
        offset: Any = None
        with _transient_when_down():
            while True:
                page, offset = await self.client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=UPSERT_BATCH,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
                points = []
                for point in page:
                    payload = dict(point.payload or {})
                    record = rekeyed(
                        target, payload, vector=dense_vector(point), document=str(payload.get("text", ""))
                    )
                    vectors: dict[str, Any] = {DENSE: record.vector}
                    stored = point.vector.get(BM25) if isinstance(point.vector, dict) else None
                    if isinstance(stored, models.SparseVector):
                        vectors[BM25] = stored  # term weights of the same text: copied, not recomputed
                    elif self.bm25:
                        vectors[BM25] = models.Document(text=record.document, model=BM25_MODEL)
                    points.append(
                        models.PointStruct(
                            id=record.point_id,
                            vector=vectors,
                            payload={
                                **record.metadata,
                                "document_id": record.document_id,
                                "text": record.document,
                            },
                        )
                    )
                if points:
                    await self.client.upsert(self.collection, points=points, wait=True)
                copied += len(points)
                if offset is None:
                    return copied

    async def delete(
        self,
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        source_id: uuid.UUID | str | None = None,
    ) -> int:
        """Delete every point of a source, a class or a user (always within one user); returns how many went."""
        flt = _filter(user_id=user_id, class_id=class_id, source_id=source_id)
        with _transient_when_down():
            found = (await self.client.count(self.collection, count_filter=flt, exact=True)).count
            if found:
                await self.client.delete(
                    self.collection, points_selector=models.FilterSelector(filter=flt), wait=True
                )
            return found

    async def promote(self, source: SourceRef) -> None:
        """Show a reprocessed source's new generation and drop every other one, in one batch request."""
        mine = _filter(user_id=source.user_id, source_id=source.source_id)
        this = models.FieldCondition(key="generation", match=models.MatchValue(value=source.generation))
        with _transient_when_down():
            await self.client.batch_update_points(
                self.collection,
                update_operations=[
                    models.SetPayloadOperation(
                        set_payload=models.SetPayload(
                            payload={"visible": True},
                            filter=models.Filter(must=[*(mine.must or []), this]),
                        )
                    ),
                    models.DeleteOperation(
                        delete=models.FilterSelector(filter=models.Filter(must=mine.must, must_not=[this]))
                    ),
                ],
                wait=True,
            )

    async def delete_records(self, records: Sequence[VectorRecord]) -> None:
        """Delete exactly these points (chunks that turned out to belong to a deleted source)."""
        if records:
            with _transient_when_down():
                await self.client.delete(
                    self.collection,
                    points_selector=models.PointIdsList(points=[r.point_id for r in records]),
                    wait=True,
                )

    async def count(self, *, user_id: uuid.UUID | str | None = None) -> int:
        """Points in the collection (of one user if given)."""
        flt = _filter(user_id=user_id) if user_id is not None else None
        return (await self.client.count(self.collection, count_filter=flt, exact=True)).count
