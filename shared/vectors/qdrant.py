"""Qdrant: one collection for every chunk, tenant-indexed by user, filtered on the tenant in every query."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import grpc
import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from shared.errors import TransientError
from shared.events.models import SourceRef
from shared.settings import Settings
from shared.vectors.records import SearchHit, VectorRecord, newest_generation_only

UPSERT_BATCH = 128
_GRPC_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)
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
    """Qdrant unreachable, restarting or refusing for load is transient (retry), over REST or gRPC."""
    try:
        yield
    except (ResponseHandlingException, UnexpectedResponse, httpx.TransportError) as error:
        raise TransientError("qdrant_unavailable", str(error)[:300]) from error
    except grpc.aio.AioRpcError as error:
        if error.code() in _GRPC_TRANSIENT:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error
        raise


def make_qdrant_client(settings: Settings) -> AsyncQdrantClient:
    """A client for the configured server (REST, or gRPC if preferred), or local mode on a folder (one process
    only, brute force: only when LMGPA_QDRANT_PATH is set on purpose)."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return AsyncQdrantClient(
            url=settings.qdrant_url,
            api_key=key,
            timeout=30,
            prefer_grpc=settings.qdrant_prefer_grpc,
            grpc_port=settings.qdrant_grpc_port,
        )
    if settings.qdrant_path:
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        return AsyncQdrantClient(path=str(settings.qdrant_path))
    raise ValueError("set LMGPA_QDRANT_URL (a server) or LMGPA_QDRANT_PATH (local mode)")


def _filter(
    *,
    user_id: uuid.UUID | str,
    class_id: uuid.UUID | str | None = None,
    content_type: str | Sequence[str] | None = None,
    source_id: uuid.UUID | str | None = None,
    visible_only: bool = False,
) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="user_id", match=models.MatchValue(value=str(user_id)))
    ]
    for key, value in (("class_id", class_id), ("source_id", source_id)):
        if value is not None:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=str(value))))
    if isinstance(content_type, str):
        must.append(models.FieldCondition(key="content_type", match=models.MatchValue(value=content_type)))
    elif content_type is not None:
        must.append(
            models.FieldCondition(
                key="content_type", match=models.MatchAny(any=[str(c) for c in content_type])
            )
        )
    if visible_only:
        must.append(models.FieldCondition(key="visible", match=models.MatchValue(value=True)))
    return models.Filter(must=must)


class QdrantStore:
    """The production vector store."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        *,
        collection: str,
        dimensions: int,
        indexing_threshold_kb: int | None = None,
    ) -> None:
        self.client = client
        self.collection = collection
        self.dimensions = dimensions
        self.indexing_threshold_kb = indexing_threshold_kb

    @classmethod
    def from_settings(cls, client: AsyncQdrantClient, settings: Settings) -> QdrantStore:
        """The store of the configured collection."""
        return cls(
            client,
            collection=settings.qdrant_collection,
            dimensions=settings.embedding_dimensions,
            indexing_threshold_kb=settings.qdrant_indexing_threshold_kb,
        )

    async def ensure_collection(self) -> None:
        """Create the collection and its payload indexes if missing (idempotent)."""
        with _transient_when_down():
            if not await self.client.collection_exists(self.collection):
                await self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE),
                    optimizers_config=(
                        None
                        if self.indexing_threshold_kb is None
                        else models.OptimizersConfigDiff(indexing_threshold=self.indexing_threshold_kb)
                    ),
                )
            for field_name, schema in PAYLOAD_INDEXES.items():
                await self.client.create_payload_index(
                    self.collection, field_name, field_schema=schema, wait=True
                )

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
                            vector=r.vector,
                            payload={**r.metadata, "document_id": r.document_id, "text": r.document},
                        )
                        for r in batch
                    ],
                    wait=True,
                )

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        content_type: str | Sequence[str] | None = None,
        limit: int = 5,
    ) -> list[SearchHit]:
        """Nearest visible chunks of one user's content (never anyone else's), each source's newest generation."""
        with _transient_when_down():
            response = await self.client.query_points(
                self.collection,
                query=list(vector),
                query_filter=_filter(
                    user_id=user_id, class_id=class_id, content_type=content_type, visible_only=True
                ),
                # Room for a reprocess's second generation, visible for the moment between its two steps.
                limit=limit * 2,
                with_payload=True,
            )
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
