"""Progress bars on a terminal for `lmgpa ingest --wait` and `lmgpa watch`: one per stage, in the units the
pipeline records in PostgreSQL (ingest_stages: pages, seconds of audio, chunks, parts)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from shared.db.jobs import JobRow, StageRow

STATE_STYLE = {"completed": "green", "failed": "bold red", "processing": "yellow", "pending": "dim"}


def _label(stage: StageRow) -> str:
    return {"completed": "done", "failed": "failed", "processing": "working", "pending": "waiting"}.get(
        stage.status, stage.status
    )


def _elapsed(stage: StageRow, now: datetime) -> str:
    """How long the stage has worked (from its start to its end, or to now): the database's clock, not ours."""
    if stage.started_at is None:
        return ""
    seconds = int(((stage.finished_at or now) - stage.started_at).total_seconds())
    minutes, secs = divmod(max(seconds, 0), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{secs:02d}"


class StageBars:
    """A rich Progress with a bar per stage of one source, moved from its job row at each poll."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=40),
            TextColumn("{task.fields[amount]:>22}"),
            TextColumn("[{task.fields[style]}]{task.fields[state]:<8}"),
            TextColumn("{task.fields[elapsed]:>8}"),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageBars:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def update(self, job: JobRow | None) -> None:
        """Show the job's stages as they are now (a stage not begun yet has no row, so no bar yet)."""
        now = datetime.now(UTC)
        for stage in job.stages if job is not None else ():
            done = stage.status == "completed"
            total = (
                stage.units_total if stage.units_total is not None else (stage.units_done if done else None)
            )
            if not total:  # a stage without units (upload) or with nothing in it: one step, done or not
                total, completed = 1, (1 if done else 0)
            else:
                completed = total if done else min(stage.units_done, total)
            amount = (
                f"{stage.units_done:,}/{'?' if stage.units_total is None else f'{stage.units_total:,}'} {stage.unit}"
                if stage.unit
                else ""
            )
            state, style, elapsed = _label(stage), STATE_STYLE.get(stage.status, ""), _elapsed(stage, now)
            if stage.stage not in self.tasks:
                self.tasks[stage.stage] = self.progress.add_task(
                    stage.stage,
                    total=total,
                    completed=completed,
                    amount=amount,
                    state=state,
                    style=style,
                    elapsed=elapsed,
                )
            else:
                self.progress.update(
                    self.tasks[stage.stage],
                    total=total,
                    completed=completed,
                    amount=amount,
                    state=state,
                    style=style,
                    elapsed=elapsed,
                )
        self.progress.refresh()
