"""Progress bars on a terminal for `lmgpa ingest --wait` and `lmgpa watch`: one per stage, in the units the
pipeline records in PostgreSQL (ingest_stages: pages, seconds of audio, chunks, parts)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from shared.db.jobs import JobRow, StageRow

STATE_STYLE = {"completed": "green", "failed": "bold red", "processing": "yellow", "pending": "dim"}


def _label(stage: StageRow) -> str:
    return {"completed": "done", "failed": "failed", "processing": "working", "pending": "waiting"}.get(
        stage.status, stage.status
    )


class StageBars:
    """A rich Progress with a bar per stage of one source, moved from its job row at each poll."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<13}"),
            BarColumn(bar_width=40),
            TextColumn("{task.fields[amount]:>22}"),
            TextColumn("[{task.fields[style]}]{task.fields[state]:<8}"),
            TimeElapsedColumn(),
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
            state, style = _label(stage), STATE_STYLE.get(stage.status, "")
            if stage.stage not in self.tasks:
                self.tasks[stage.stage] = self.progress.add_task(
                    stage.stage, total=total, completed=completed, amount=amount, state=state, style=style
                )
            else:
                self.progress.update(
                    self.tasks[stage.stage],
                    total=total,
                    completed=completed,
                    amount=amount,
                    state=state,
                    style=style,
                )
            if stage.status in ("completed", "failed"):
                self.progress.stop_task(self.tasks[stage.stage])  # its clock stops
        self.progress.refresh()
