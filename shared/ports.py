"""Ports every handler may receive: small protocols with PostgreSQL, store or model adapters behind them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class SourceRow:
    """The columns of a content row the pipeline needs."""

    source_id: uuid.UUID
    kind: str
    user_id: uuid.UUID | None
    class_id: uuid.UUID | None
    title: str
    created_at: datetime
    text: str | None
    """The stored text: a note's content, a photo's extracted_text, a recording's transcript_text."""
    vector_id: str | None
    storage_url: str | None = None


class Tracker(Protocol):
    """Reports each source's stages: waiting, working (with progress), done."""

    async def started(
        self, source_id: uuid.UUID, stage: str, *, units_total: int | None = None, unit: str | None = None
    ) -> None:
        """A stage began."""

    async def progressed(
        self, source_id: uuid.UUID, stage: str, *, units_done: int, units_total: int | None = None
    ) -> None:
        """Heartbeat with progress."""

    async def finished(
        self,
        source_id: uuid.UUID,
        stage: str,
        *,
        units_done: int | None = None,
        next_stage: str | None = None,
    ) -> None:
        """A stage completed; the next one (if any) is waiting."""
