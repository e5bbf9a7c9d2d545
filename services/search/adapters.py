"""Search's side effects: the query-embedding model (loaded once, queries batched), the sharing tables."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from dataclasses import dataclass

import asyncpg

from shared.db import sharing
from shared.embedder import SentenceEmbedder
from shared.vectors.records import SharedSource

MAX_BATCH = 32


@dataclass
class _Pending:
    text: str
    done: asyncio.Future[list[float]]


class BatchingQueryEmbedder:
    """Embeds queries on one model thread; queries that arrive while the model is busy go in its next batch.

    Nothing waits for a batch to fill: a lone query is embedded at once. Under load, one model call serves
    many queries (one call of 8 short queries costs little more than one), and the model never runs twice at
    once on the same cores."""

    def __init__(self, embedder: SentenceEmbedder) -> None:
        self.embedder = embedder
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching loop (on the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the loop and the model thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._thread.shutdown(wait=False)

    async def __call__(self, text: str) -> list[float]:
        """The query's vector, as the chunks' were made."""
        done: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(text, done))
        return await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                vectors = await loop.run_in_executor(
                    self._thread, self.embedder.embed_sync, [p.text for p in batch]
                )
            except Exception as error:  # a model failure fails these queries, not the loop
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(error)
                continue
            for pending, vector in zip(batch, vectors, strict=True):
                if not pending.done.done():
                    pending.done.set_result(vector.tolist())


class PostgresShares:
    """The sources shared with a student, read from PostgreSQL at every search that asks for them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def __call__(self, user_id: uuid.UUID) -> list[SharedSource]:
        """shared.db.sharing.sources_shared_with."""
        return await sharing.sources_shared_with(self.pool, user_id=user_id)
