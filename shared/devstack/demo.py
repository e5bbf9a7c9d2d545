"""`lmgpa dev demo`: the embedded stack, two students' sample notes, their status and a search each."""

from __future__ import annotations

import asyncio
import os
import uuid
from importlib import resources

from shared.cli.backend import fetch_status, ingest_source, render_status, search_chunks
from shared.devstack import stack
from shared.settings import Settings

DEMO = uuid.UUID("2d3c6a4e-8b1f-4f0e-9a7c-5e6d7f8a9b0c")
STUDENTS = {
    "ada": ("Calculus I", "ada-"),
    "ben": ("Biology", "ben-"),
}
QUESTIONS = {
    "ada": "what is the slope of the tangent line?",
    "ben": "how do plants release oxygen?",
}


def _ids(student: str) -> tuple[uuid.UUID, uuid.UUID]:
    return uuid.uuid5(DEMO, f"user/{student}"), uuid.uuid5(DEMO, f"class/{student}")


async def _ingest_all(settings: Settings) -> list[dict[str, object]]:
    notes = resources.files("shared.samples").joinpath("notes")
    results = []
    for student, (class_name, prefix) in STUDENTS.items():
        user_id, class_id = _ids(student)
        for note in sorted((n for n in notes.iterdir() if n.name.startswith(prefix)), key=lambda n: n.name):
            text = note.read_text(encoding="utf-8")
            results.append(
                await ingest_source(
                    settings,
                    path=None,
                    note=text,
                    kind="note",
                    user_id=user_id,
                    class_id=class_id,
                    title=text.splitlines()[0].lstrip("# ").strip(),
                    create_owner=True,
                    wait=True,
                    wait_seconds=300,
                    # The same sample gives the same event, so running the demo twice changes nothing.
                    event_id=uuid.uuid5(DEMO, f"note/{note.name}"),
                    class_name=class_name,
                )
            )
    return results


def run_demo() -> int:
    """Run the demo; returns a process exit code."""
    state = stack.up()
    print(f"embedded stack up in {state.home}: {', '.join(sorted({w.service for w in state.workers}))}")
    os.environ.update(state.env)
    settings = Settings()
    results = asyncio.run(_ingest_all(settings))
    failed = [r for r in results if r["status"] != "completed"]
    print(
        f"\ningested {len(results)} notes for 2 students: {len(results) - len(failed)} completed, {len(failed)} not\n"
    )
    report = asyncio.run(fetch_status(settings, source_id=None, user_id=None, limit=len(results)))
    print(render_status(report))
    for student, question in QUESTIONS.items():
        user_id, class_id = _ids(student)
        print(f"\n$ lmgpa search --user {user_id} --class {class_id} {question!r}   # {student}")
        hits = asyncio.run(
            search_chunks(
                settings,
                question,
                user_id=user_id,
                class_id=class_id,
                content_type=None,
                limit=3,
                store="chroma",
            )
        )
        for rank, hit in enumerate(hits, start=1):
            excerpt = " ".join(str(hit["text"]).split())[:110]
            print(f"  {rank}. {hit['score']:.3f} {hit['metadata'].get('title')!r}: {excerpt}…")
    print("\nThe stack is still running. Try `.venv/bin/lmgpa status` or `.venv/bin/lmgpa search ...`;")
    print("stop it with `make down` (or `.venv/bin/lmgpa dev down`).")
    return 1 if failed else 0
