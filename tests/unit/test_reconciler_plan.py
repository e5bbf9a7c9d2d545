"""The reconciler's decisions as a pure function: what is re-driven, what is given up on, and when."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.reconciler.handlers import plan_pass, stalled_reason
from shared.db.outbox import OutboxEvent, Pending

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def pending(idle: float, *, redrives: int = 0, stage: str | None = "ocr") -> Pending:
    return Pending(
        event=OutboxEvent(
            event_id=uuid.uuid4(),
            source_id=uuid.uuid4(),
            consumer="ocr",
            topic="lmgpa.photo.uploaded.v1",
            key=b"k",
            payload=b"{}",
        ),
        job_status="processing",
        stage=stage,
        created_at=NOW - timedelta(seconds=idle),
        last_progress_at=NOW - timedelta(seconds=idle),
        redrives=redrives,
        last_redrive_at=None,
    )


def test_nothing_happens_to_work_that_shows_progress() -> None:
    plan = plan_pass([pending(10)], now=NOW, broker_lost=False, stall_seconds=300, max_redrives=3)
    assert plan.redrive == [] and plan.give_up == []


def test_stalled_work_is_redriven_until_the_bound_then_given_up() -> None:
    fresh, tried, spent = pending(301), pending(400, redrives=2), pending(400, redrives=3)
    plan = plan_pass([fresh, tried, spent], now=NOW, broker_lost=False, stall_seconds=300, max_redrives=3)
    assert plan.redrive == [fresh, tried] and plan.give_up == [spent]


def test_a_lost_broker_log_redrives_everything_at_once_and_gives_up_on_nothing() -> None:
    items = [pending(0.5), pending(10), pending(1000, redrives=9)]
    plan = plan_pass(items, now=NOW, broker_lost=True, stall_seconds=300, max_redrives=3)
    assert plan.redrive == items and plan.give_up == []


def test_an_operator_forces_a_redrive_whatever_the_idle_time() -> None:
    item = pending(1)
    plan = plan_pass([item], now=NOW, broker_lost=False, stall_seconds=300, max_redrives=3, force=True)
    assert plan.redrive == [item]


def test_the_stalled_reason_names_the_stage_and_the_count() -> None:
    reason = stalled_reason(pending(400, redrives=3, stage="transcription"), stall_seconds=300)
    assert "transcription stage" in reason and "300 s" in reason and "3 re-drives" in reason
