"""An in-process pipeline for integration tests: the real workers' apps on the real broker, PostgreSQL,
Chroma server and Qdrant server, plus the helpers tests need to publish events and wait for outcomes."""

from __future__ import annotations

import asyncio
import importlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from shared.broker import create_topics, group_id, make_broker, publish
from shared.db import inbox, jobs, owners
from shared.db.migrate import apply_migrations
from shared.db.pool import create_pool
from shared.devstack.servers import ServerProcess
from shared.events.models import Envelope
from shared.events.topics import SERVICE_INPUTS
from shared.settings import Settings, get_settings
from shared.vectors.chroma import ChromaStore
from shared.vectors.qdrant import QdrantStore


@dataclass
class Harness:
    """What a test talks to."""

    settings: Settings
    pool: asyncpg.Pool
    producer: KafkaBroker
    qdrant: QdrantStore
    chroma: ChromaStore
    services: tuple[str, ...]

    async def new_owner(self) -> tuple[uuid.UUID, uuid.UUID]:
        """A fresh student with one class of theirs."""
        user_id, class_id = uuid.uuid4(), uuid.uuid4()
        await owners.ensure_user(self.pool, user_id=user_id)
        await owners.ensure_class(self.pool, class_id=class_id, user_id=user_id)
        return user_id, class_id

    async def publish(self, event: Envelope) -> None:
        """Publish an event as a producer would."""
        await publish(self.producer, event)

    async def publish_raw(self, topic: str, key: bytes, value: bytes) -> None:
        """Publish bytes as they are."""
        await self.producer.publish(value, topic=topic, key=key)

    async def wait_job(self, source_id: uuid.UUID, *, timeout: float = 90.0) -> jobs.JobRow:
        """Wait until the source's job is completed or failed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = await jobs.get_job(self.pool, source_id=source_id)
            if job is not None and job.status in ("completed", "failed"):
                return job
            await asyncio.sleep(0.2)
        raise TimeoutError(
            f"source {source_id} did not finish: {await jobs.get_job(self.pool, source_id=source_id)}"
        )

    async def wait_rejection(
        self, *, event_id: uuid.UUID | None = None, key: str | None = None, timeout: float = 60.0
    ) -> inbox.Rejection:
        """Wait until a message is refused and return why."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = await inbox.list_rejections(self.pool, event_id=event_id, key=key, limit=1)
            if found:
                return found[0]
            await asyncio.sleep(0.2)
        raise TimeoutError(f"no rejection for event {event_id} / key {key}")

    async def source_vectors(
        self, user_id: uuid.UUID, class_id: uuid.UUID, source_id: uuid.UUID, kind: str = "note"
    ) -> tuple[int, int]:
        """How many vectors of a source are in Qdrant and in Chroma."""
        from shared.events.models import CONTENT_TYPE_OF_KIND
        from shared.vectors.records import chroma_collection_name

        points = await self.qdrant.points_of_source(user_id=user_id, source_id=source_id)
        docs = await self.chroma.documents_of_source(
            collection=chroma_collection_name(user_id, class_id, CONTENT_TYPE_OF_KIND[kind]),
            source_id=source_id,
        )
        return len(points), len(docs["ids"])

    async def wait_deletion(self, event_id: uuid.UUID, *, timeout: float = 60.0) -> int:
        """Wait until a delete reached both stores; returns how many vectors it removed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = await self.pool.fetchrow(
                "SELECT completed_at, vectors_removed FROM deletions WHERE event_id = $1", event_id
            )
            if row is not None and row["completed_at"] is not None:
                return int(row["vectors_removed"] or 0)
            await asyncio.sleep(0.2)
        raise TimeoutError(f"delete {event_id} did not complete")

    async def drain(self, *, timeout: float = 90.0) -> None:
        """Wait until every worker's group has committed every message of its input topics."""
        deadline = time.monotonic() + timeout
        for service in self.services:
            for topic in SERVICE_INPUTS[service]:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.settings.kafka_bootstrap_servers,
                    group_id=group_id(self.settings, service=service, topic=topic),
                    enable_auto_commit=False,
                    session_timeout_ms=4000,
                )
                await consumer.start()
                try:
                    partitions = consumer.partitions_for_topic(topic) or set()
                    tps = [TopicPartition(topic, p) for p in partitions]
                    while True:
                        ends = await consumer.end_offsets(tps)
                        lagging = [tp for tp in tps if ((await consumer.committed(tp)) or 0) < ends[tp]]
                        if not lagging:
                            break
                        if time.monotonic() > deadline:
                            raise TimeoutError(f"{service} still has unconsumed messages on {lagging}")
                        await asyncio.sleep(0.2)
                finally:
                    await consumer.stop()


@asynccontextmanager
async def running_pipeline(
    *,
    database_url: str,
    bootstrap: str,
    chroma_url: str,
    qdrant: ServerProcess,
    home: Path,
    services: Sequence[str],
    qdrant_collection: str | None = None,
) -> AsyncIterator[Harness]:
    """Migrate, create topics, start the workers' apps in this process, and yield the harness."""
    env = {
        "LMGPA_DATABASE_URL": database_url,
        "LMGPA_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LMGPA_CHROMA_URL": chroma_url,
        "LMGPA_QDRANT_URL": qdrant.url,
        "LMGPA_QDRANT_GRPC_PORT": str(qdrant.grpc_port),
        # Its own collection: the session's Qdrant server is shared with other tests.
        "LMGPA_QDRANT_COLLECTION": qdrant_collection or f"chunks_{uuid.uuid4().hex[:12]}",
        "LMGPA_STORAGE_ROOT": str(home / "storage"),
        "LMGPA_BATCH_MAX_RECORDS": "16",
        "LMGPA_MODEL_CACHE_DIR": str(home / "models"),
        "LMGPA_SESSION_TIMEOUT_MS": "4000",
        # Transient failures give up quickly here, so the retry budget and dead letters can be tested.
        "LMGPA_RETRY_ATTEMPTS": "2",
        "LMGPA_RETRY_BASE_DELAY": "0.2",
        "LMGPA_MAX_DELIVERIES": "3",
    }
    os.environ.pop("LMGPA_QDRANT_PATH", None)
    os.environ.update(env)
    (home / "storage").mkdir(parents=True, exist_ok=True)
    get_settings.cache_clear()
    settings = get_settings()
    await apply_migrations(database_url)
    await create_topics(bootstrap, partitions=settings.topic_partitions)
    async with AsyncExitStack() as stack:
        modules: dict[str, Any] = {}
        for service in services:
            module = importlib.import_module(f"services.{service}.app")
            await stack.enter_async_context(module.app.lifespan_context())
            await module.app.start()
            stack.push_async_callback(module.app.stop)
            modules[service] = module
        pool = await create_pool(database_url)
        stack.push_async_callback(pool.close)
        producer = make_broker(settings, service="tests")
        await stack.enter_async_context(producer)
        indexing = modules["indexing"]
        yield Harness(
            settings=settings,
            pool=pool,
            producer=producer,
            qdrant=indexing.stores.qdrant,
            chroma=indexing.stores.chroma,
            services=tuple(services),
        )
