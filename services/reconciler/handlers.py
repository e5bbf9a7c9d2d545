"""Reconciler: which pending stage inputs to publish again, and which sources to give up on (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.db.outbox import Pending

SERVICE = "reconciler"


@dataclass(frozen=True)
class Plan:
    """What one pass does."""

    redrive: list[Pending] = field(default_factory=list)
    give_up: list[Pending] = field(default_factory=list)
    """Stalled past the bound: their sources fail as `stalled`."""


def plan_pass(
    pending: list[Pending],
    *,
    now: datetime,
    broker_lost: bool,
    stall_seconds: float,
    max_redrives: int,
    force: bool = False,
) -> Plan:
    """Decide for every input that no consumer has applied yet.

    - The broker lost its log (its epoch marker is gone: an in-memory broker restarted, a topic was deleted):
      every pending input is published again at once: it is not in the broker any more.
    - Otherwise an input is re-driven when its source has shown no sign of life (job update, stage heartbeat,
      start or end, or the last re-drive) for `stall_seconds`: lost to retention, never published (a crash
      between writing and publishing), or stuck.
    - `force` (an operator's `lmgpa redrive SOURCE`) re-drives whatever is pending.
    A stalled input that was re-driven `max_redrives` times already is given up on instead: its source fails as
    `stalled`, so no source stays unfinished without someone being told. A broker loss never counts against
    that bound's decision to give up (the work did not stall; the broker forgot it)."""
    plan = Plan()
    for item in pending:
        idle = (now - item.last_progress_at).total_seconds()
        if broker_lost or force:
            plan.redrive.append(item)
        elif idle >= stall_seconds:
            (plan.give_up if item.redrives >= max_redrives else plan.redrive).append(item)
    return plan


def stalled_reason(item: Pending, *, stall_seconds: float) -> str:
    """Why a source is given up on, naming its stage."""
    stage = item.stage or item.event.consumer
    return (
        f"the {stage} stage made no progress for {stall_seconds:.0f} s after {item.redrives} re-drives of its "
        f"input ({item.event.topic}); see the {item.event.consumer} worker's log, then `lmgpa reprocess` the source"
    )


@dataclass(frozen=True)
class PassReport:
    """What one pass did."""

    skipped: bool = False
    """Another reconciler held the pass lock."""
    broker_lost: bool = False
    redriven: list[Pending] = field(default_factory=list)
    given_up: list[Pending] = field(default_factory=list)
    dropped: int = 0


class Db(Protocol):
    """The pass's PostgreSQL (ReconcilerDb)."""

    async def pending(self, source_id: uuid.UUID | None = None) -> list[Pending]: ...
    async def note_redrives(self, items: Sequence[Pending]) -> None: ...
    async def give_up(self, item: Pending, *, stall_seconds: float) -> Any: ...
    async def drop_finished(self) -> int: ...
    async def epoch(self) -> str | None: ...
    async def set_epoch(self, epoch: str) -> None: ...


class Broker(Protocol):
    """The pass's broker (BrokerLink)."""

    async def holds_epoch(self, epoch: str | None) -> bool: ...
    async def mark_epoch(self) -> str: ...
    async def ensure_topics(self) -> None: ...
    async def republish(self, items: Sequence[Pending]) -> None: ...
    async def announce(self, failures: Sequence[Any]) -> None: ...


async def reconcile(
    *,
    db: Db,
    broker: Broker,
    now: datetime,
    stall_seconds: float,
    max_redrives: int,
    source_id: uuid.UUID | None = None,
    force: bool = False,
) -> PassReport:
    """One pass: find what the broker lost or what stalled, publish it again, give up past the bound."""
    broker_lost = not await broker.holds_epoch(await db.epoch())
    if broker_lost:
        await broker.ensure_topics()
    pending = await db.pending(source_id)
    plan = plan_pass(
        pending,
        now=now,
        broker_lost=broker_lost,
        stall_seconds=stall_seconds,
        max_redrives=max_redrives,
        force=force,
    )
    if plan.redrive:
        await broker.republish(plan.redrive)
        await db.note_redrives(plan.redrive)
    failures = [await db.give_up(item, stall_seconds=stall_seconds) for item in plan.give_up]
    if failures:
        await broker.announce(failures)
    if broker_lost:
        await db.set_epoch(await broker.mark_epoch())
    dropped = await db.drop_finished()
    return PassReport(broker_lost=broker_lost, redriven=plan.redrive, given_up=plan.give_up, dropped=dropped)
