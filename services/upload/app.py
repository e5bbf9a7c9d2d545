"""Upload worker: FastStream wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.upload.adapters import FileFingerprints, PostgresDirectory
from services.upload.handlers import SERVICE, Limits, accept_upload, reprocess_source
from shared.broker import consumer_options
from shared.events import topics
from shared.events.models import SourceReprocessRequested, SourceUploaded
from shared.service import Runtime
from shared.storage import LocalStorage

runtime = Runtime(SERVICE)
broker = runtime.broker
storage = LocalStorage(runtime.settings.storage_root)
limits = Limits(
    max_note_chars=runtime.settings.max_note_chars,
    max_file_bytes=runtime.settings.max_file_bytes,
    reuse=runtime.settings.reuse_identical_uploads,
)
fingerprints = FileFingerprints(runtime.settings)


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Database pool and runner for the life of the process."""
    async with runtime.started():
        yield


@broker.subscriber(
    topics.SOURCE_UPLOADED,
    **consumer_options(runtime.settings, service=SERVICE, topic=topics.SOURCE_UPLOADED),
)
async def on_source_uploaded(message: KafkaMessage) -> None:
    """Accept or refuse one upload."""
    await runtime.worker.handle(
        message.raw_message,
        SourceUploaded,
        lambda event: accept_upload(
            event,
            directory=PostgresDirectory(runtime.pool),
            storage=storage,
            limits=limits,
            fingerprints=fingerprints,
        ),
    )


@broker.subscriber(
    topics.SOURCE_REPROCESS,
    **consumer_options(runtime.settings, service=SERVICE, topic=topics.SOURCE_REPROCESS),
)
async def on_source_reprocess(message: KafkaMessage) -> None:
    """Run a finished source again from a stage."""
    await runtime.worker.handle(
        message.raw_message,
        SourceReprocessRequested,
        lambda event: reprocess_source(
            event, directory=PostgresDirectory(runtime.pool), storage=storage, fingerprints=fingerprints
        ),
    )


app = runtime.app(lifespan)
