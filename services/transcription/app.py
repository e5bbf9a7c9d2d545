"""Transcription worker: FastStream wiring only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.kafka.annotations import KafkaMessage

from services.transcription.adapters import PostgresRecordings, WhisperAudio
from services.transcription.handlers import SERVICE, Limits, plan_transcription, transcribe
from shared.broker import consumer_options
from shared.events import topics
from shared.events.models import AudioPieceQueued, AudioUploaded
from shared.media.speech import make_engine
from shared.service import Runtime
from shared.storage import LocalStorage
from shared.tracking import PostgresTracker

runtime = Runtime(SERVICE)
broker = runtime.broker
limits = Limits(max_seconds=runtime.settings.max_audio_seconds)


class Models:
    """Loaded once in the lifespan."""

    audio: WhisperAudio


models = Models()


@asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Load the Whisper engine once per process."""
    settings = runtime.settings
    engine = make_engine(settings.whisper_engine, settings.whisper_model, cache_dir=settings.model_cache_dir)
    models.audio = WhisperAudio(
        LocalStorage(settings.storage_root), engine, piece_seconds=settings.audio_piece_seconds
    )
    async with runtime.started():
        yield


@broker.subscriber(
    topics.AUDIO_UPLOADED, **consumer_options(runtime.settings, service=SERVICE, topic=topics.AUDIO_UPLOADED)
)
async def on_audio_uploaded(message: KafkaMessage) -> None:
    """Plan a recording into pieces."""
    await runtime.worker.handle(
        message.raw_message,
        AudioUploaded,
        lambda event: plan_transcription(
            event,
            audio=models.audio,
            recordings=PostgresRecordings(runtime.pool),
            tracker=PostgresTracker(runtime.pool),
            limits=limits,
        ),
    )


@broker.subscriber(
    topics.AUDIO_PIECES, **consumer_options(runtime.settings, service=SERVICE, topic=topics.AUDIO_PIECES)
)
async def on_audio_piece(message: KafkaMessage) -> None:
    """Transcribe one piece of a recording."""
    await runtime.worker.handle(
        message.raw_message,
        AudioPieceQueued,
        lambda event: transcribe(
            event,
            audio=models.audio,
            recordings=PostgresRecordings(runtime.pool),
            tracker=PostgresTracker(runtime.pool),
        ),
    )


app = runtime.app(lifespan)
