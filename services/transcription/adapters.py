"""Transcription's side effects: decoding and Whisper (off the event loop), and the audio_recordings row."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from services.transcription.handlers import PieceProgress, Plan
from shared.db import pieces, sources
from shared.events.models import AudioPieceQueued, SourceRef, TextSegment
from shared.media.audio import decode_audio, plan_pieces, probe_audio, speaker_channels
from shared.media.speech import SpeechEngine, transcribe_channels
from shared.storage import LocalStorage

SERVICE = "transcription"


class WhisperAudio:
    """Files from storage, decoded with PyAV, transcribed by the configured Whisper engine."""

    def __init__(self, storage: LocalStorage, engine: SpeechEngine, *, piece_seconds: float) -> None:
        self.storage = storage
        self.engine = engine
        self.piece_seconds = piece_seconds

    def _plan(self, url: str) -> Plan:
        path = self.storage.resolve(url).path
        info = probe_audio(path)
        spans = plan_pieces(path, info, piece_seconds=self.piece_seconds)
        return Plan(
            duration_seconds=info.duration_seconds, pieces=tuple(spans), channels=speaker_channels(path, info)
        )

    async def plan(self, url: str) -> Plan:
        """Probe the file and cut it into pieces at quiet moments."""
        return await asyncio.to_thread(self._plan, url)

    def _transcribe(
        self, url: str, start_seconds: float, end_seconds: float, channels: list[int] | None
    ) -> list[TextSegment]:
        path = self.storage.resolve(url).path
        pcm = decode_audio(path, start_seconds=start_seconds, end_seconds=end_seconds)
        segments = transcribe_channels(self.engine, pcm, channels, offset_seconds=start_seconds)
        return [
            TextSegment(
                text=s.text.strip(),
                start_seconds=max(s.start_seconds, 0.0),
                end_seconds=max(s.end_seconds, s.start_seconds, 0.0),
                confidence=None if s.confidence is None else round(100 * s.confidence, 2),
            )
            for s in segments
            if s.text.strip()
        ]

    async def transcribe(
        self, url: str, *, start_seconds: float, end_seconds: float, channels: list[int] | None
    ) -> list[TextSegment]:
        """Speech segments of one span, with absolute times (CPU work in a thread: heartbeats go on)."""
        return await asyncio.to_thread(self._transcribe, url, start_seconds, end_seconds, channels)


class PostgresRecordings:
    """audio_recordings and ingest_pieces, through shared.db."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def started(self, source: SourceRef, *, duration_seconds: float) -> None:
        """duration_seconds set, transcript_status processing."""
        async with self.pool.acquire() as conn, conn.transaction():
            await sources.set_duration(conn, source_id=source.source_id, seconds=duration_seconds)
            await sources.set_status(conn, kind="audio", source_id=source.source_id, status="processing")

    async def piece_done(self, event: AudioPieceQueued, segments: Sequence[TextSegment]) -> PieceProgress:
        """Keep a finished piece; on the last one, store the whole transcript and complete the status."""
        progress = await pieces.record_piece(
            self.pool,
            source_id=event.source.source_id,
            stage=SERVICE,
            piece_index=event.piece_index,
            piece_count=event.piece_count,
            units=round(event.end_seconds - event.start_seconds),
            result=[s.model_dump(mode="json") for s in segments],
        )
        transcript = ""
        if progress.completed_now:
            texts = [segment["text"] for piece in progress.results for segment in piece]
            transcript = " ".join(texts)
            async with self.pool.acquire() as conn, conn.transaction():
                await sources.save_text(conn, kind="audio", source_id=event.source.source_id, text=transcript)
                await sources.set_status(
                    conn, kind="audio", source_id=event.source.source_id, status="completed"
                )
        return PieceProgress(
            seconds_done=progress.units_done, completed_now=progress.completed_now, transcript=transcript
        )
