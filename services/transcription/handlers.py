"""Transcription: plan a recording into pieces cut at quiet moments, then transcribe each piece (any replica)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.errors import PermanentError
from shared.events.models import (
    AudioPieceQueued,
    AudioUploaded,
    Envelope,
    SourceRef,
    TextExtracted,
    TextSegment,
)
from shared.ports import Tracker

SERVICE = "transcription"


@dataclass(frozen=True)
class Plan:
    """How a recording will be transcribed."""

    duration_seconds: float
    pieces: tuple[tuple[float, float], ...]
    channels: list[int] | None
    """Channels carrying different speakers, transcribed one by one; None: mixed down."""


class Audio(Protocol):
    """The recording behind its storage URL, and the speech engine."""

    async def plan(self, url: str) -> Plan:
        """Probe the file and cut it into pieces (PermanentError if it is not usable audio)."""

    async def transcribe(
        self, url: str, *, start_seconds: float, end_seconds: float, channels: list[int] | None
    ) -> list[TextSegment]:
        """Segments of speech in one span, with absolute times."""


@dataclass(frozen=True)
class PieceProgress:
    """What recording a piece changed."""

    seconds_done: int
    completed_now: bool
    transcript: str
    """The whole transcript, only when completed_now."""


class Recordings(Protocol):
    """The audio_recordings row and the finished pieces."""

    async def started(self, source: SourceRef, *, duration_seconds: float) -> None:
        """duration_seconds set, transcript_status processing."""

    async def piece_done(self, event: AudioPieceQueued, segments: Sequence[TextSegment]) -> PieceProgress:
        """Keep a finished piece; on the last one, store the transcript and complete the status."""


@dataclass(frozen=True)
class Limits:
    """What a recording may be."""

    max_seconds: float


async def plan_transcription(
    event: AudioUploaded, *, audio: Audio, recordings: Recordings, tracker: Tracker, limits: Limits
) -> list[Envelope]:
    """Probe the recording and queue its pieces, each small enough to finish well inside a poll interval."""
    plan = await audio.plan(event.storage_url)
    if plan.duration_seconds > limits.max_seconds:
        raise PermanentError(
            "too_long",
            f"the recording lasts {plan.duration_seconds:.0f} s; the limit is {limits.max_seconds:.0f} s",
        )
    await recordings.started(event.source, duration_seconds=plan.duration_seconds)
    await tracker.started(
        event.source.source_id, SERVICE, units_total=round(plan.duration_seconds), unit="seconds"
    )
    return [
        AudioPieceQueued(
            **event.follow(f"AudioPieceQueued/{i}", producer=SERVICE),
            source=event.source,
            storage_url=event.storage_url,
            duration_seconds=plan.duration_seconds,
            piece_index=i,
            piece_count=len(plan.pieces),
            start_seconds=start,
            end_seconds=end,
            channels=plan.channels,
        )
        for i, (start, end) in enumerate(plan.pieces)
    ]


async def transcribe(
    event: AudioPieceQueued, *, audio: Audio, recordings: Recordings, tracker: Tracker
) -> list[Envelope]:
    """Transcribe one piece and pass its text on at once; the last piece completes the recording."""
    segments = await audio.transcribe(
        event.storage_url,
        start_seconds=event.start_seconds,
        end_seconds=event.end_seconds,
        channels=event.channels,
    )
    progress = await recordings.piece_done(event, segments)
    source_id = event.source.source_id
    if progress.completed_now:
        await tracker.finished(
            source_id, SERVICE, units_done=round(event.duration_seconds), next_stage="embedding"
        )
    else:
        await tracker.progressed(
            source_id, SERVICE, units_done=progress.seconds_done, units_total=round(event.duration_seconds)
        )
    return [
        TextExtracted(
            **event.follow("TextExtracted", producer=SERVICE),
            source=event.source,
            segments=[s for s in segments if s.text.strip()],
            part_index=event.piece_index,
            part_count=event.piece_count,
        )
    ]
