"""Qdrant: one collection for every chunk, tenant-indexed by user, filtered on the tenant in every query."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from shared.errors import TransientError
from shared.events.models import SourceRef
from shared.settings import Settings
from shared.vectors.records import SearchHit, VectorRecord

UPSERT_BATCH = 128
PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType | models.KeywordIndexParams] = {
    "user_id": models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    "class_id": models.PayloadSchemaType.KEYWORD,
    "content_type": models.PayloadSchemaType.KEYWORD,
    "source_id": models.PayloadSchemaType.KEYWORD,
    "visible": models.PayloadSchemaType.BOOL,
}


def make_qdrant_client(settings: Settings) -> AsyncQdrantClient:
    """A client for the configured server, or local mode on a folder (one process only)."""
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return AsyncQdrantClient(url=settings.qdrant_url, api_key=key, timeout=30)
    if settings.qdrant_path:
        settings.qdrant_path.mkdir(parents=True, exist_ok=True)
        return AsyncQdrantClient(path=str(settings.qdrant_path))
    raise ValueError("set LMGPA_QDRANT_URL (a server) or LMGPA_QDRANT_PATH (local mode)")


def _filter(
    *,
    user_id: uuid.UUID | str,
    class_id: uuid.UUID | str | None = None,
    content_type: str | None = None,
    source_id: uuid.UUID | str | None = None,
    visible_only: bool = False,
) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="user_id", match=models.MatchValue(value=str(user_id)))
    ]
    for key, value in (("class_id", class_id), ("content_type", content_type), ("source_id", source_id)):
        if value is not None:
            must.append(models.FieldCondition(key=key, match=models.MatchValue(value=str(value))))
    if visible_only:
        must.append(models.FieldCondition(key="visible", match=models.MatchValue(value=True)))
    return models.Filter(must=must)


class QdrantStore:
    """The production vector store."""

    def __init__(self, client: AsyncQdrantClient, *, collection: str, dimensions: int) -> None:
        self.client = client
        self.collection = collection
        self.dimensions = dimensions

    async def ensure_collection(self) -> None:
        """Create the collection and its payload indexes if missing (idempotent)."""
        try:
            if not await self.client.collection_exists(self.collection):
                await self.client.create_collection(
                    self.collection,
                    vectors_config=models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE),
                )
            for field_name, schema in PAYLOAD_INDEXES.items():
                await self.client.create_payload_index(
                    self.collection, field_name, field_schema=schema, wait=True
                )
        except (ResponseHandlingException, UnexpectedResponse) as error:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Write points (same ids overwrite) and wait until they are durable."""
        try:
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
        except (ResponseHandlingException, UnexpectedResponse) as error:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error

    async def search(
        self,
        vector: Sequence[float],
        *,
        user_id: uuid.UUID | str,
        class_id: uuid.UUID | str | None = None,
        content_type: str | None = None,
        limit: int = 5,
    ) -> list[SearchHit]:
        """Nearest chunks of one user's content (never anyone else's)."""
        response = await self.client.query_points(
            self.collection,
            query=list(vector),
            query_filter=_filter(
                user_id=user_id, class_id=class_id, content_type=content_type, visible_only=True
            ),
            limit=limit,
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
        return hits

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
        try:
            found = (await self.client.count(self.collection, count_filter=flt, exact=True)).count
            if found:
                await self.client.delete(
                    self.collection, points_selector=models.FilterSelector(filter=flt), wait=True
                )
            return found
        except (ResponseHandlingException, UnexpectedResponse) as error:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error

    async def promote(self, source: SourceRef) -> None:
        """Show a reprocessed source's new generation and drop every other one, in one batch request."""
        mine = _filter(user_id=source.user_id, source_id=source.source_id)
        this = models.FieldCondition(key="generation", match=models.MatchValue(value=source.generation))
        try:
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
        except (ResponseHandlingException, UnexpectedResponse) as error:
            raise TransientError("qdrant_unavailable", str(error)[:300]) from error

    async def delete_records(self, records: Sequence[VectorRecord]) -> None:
        """Delete exactly these points (chunks that turned out to belong to a deleted source)."""
        if records:
            await self.client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=[r.point_id for r in records]),
                wait=True,
            )

    async def count(self, *, user_id: uuid.UUID | str | None = None) -> int:
        """Points in the collection (of one user if given)."""
        flt = _filter(user_id=user_id) if user_id is not None else None
        return (await self.client.count(self.collection, count_filter=flt, exact=True)).count
