"""`lmgpa dev demo`: the embedded stack, two students' sample notes, their status and a search each."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from importlib import resources

from shared.cli.backend import fetch_status, ingest_source, render_status
from shared.cli.search import search_via_api
from shared.devstack import stack
from shared.settings import Settings

DEMO = uuid.UUID("2d3c6a4e-8b1f-4f0e-9a7c-5e6d7f8a9b0c")
STUDENTS = {
    "ada": ("Calculus I", "ada-"),
    "ben": ("Biology", "ben-"),
}
QUESTIONS = [
    ("ada", "what is the slope of the tangent line?", None),
    ("ada", "how do I differentiate sine of x squared?", "transcripts"),
    ("ada", "what does the second derivative tell us?", "photos"),
    ("ben", "how do plants release oxygen?", None),
    ("ben", "what does helicase do to the double helix?", "textbooks"),
]
KIND_OF_SUFFIX = {".m4a": "audio", ".jpg": "photo", ".pdf": "textbook"}


def _ids(student: str) -> tuple[uuid.UUID, uuid.UUID]:
    return uuid.uuid5(DEMO, f"user/{student}"), uuid.uuid5(DEMO, f"class/{student}")


async def _ingest_all(settings: Settings) -> list[dict[str, object]]:
    samples = resources.files("shared.samples")
    notes = samples.joinpath("notes")
    media = samples.joinpath("media")
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
        for item in sorted((m for m in media.iterdir() if m.name.startswith(prefix)), key=lambda m: m.name):
            with resources.as_file(item) as path:
                results.append(
                    await ingest_source(
                        settings,
                        path=path,
                        note=None,
                        kind=KIND_OF_SUFFIX[path.suffix],
                        user_id=user_id,
                        class_id=class_id,
                        title=path.stem.removeprefix(prefix).replace("-", " ").capitalize(),
                        create_owner=True,
                        wait=True,
                        wait_seconds=600,
                        event_id=uuid.uuid5(DEMO, f"media/{item.name}"),
                        class_name=class_name,
                    )
                )
    return results


def summary(results: list[dict[str, object]]) -> str:
    """'ingested 8 sources for 2 students (1 audio, 5 notes, ...): 7 completed, 1 failed'."""
    kinds = Counter(str(r.get("kind")) for r in results)
    statuses = Counter(str(r.get("status")) for r in results)
    return (
        f"ingested {_count(len(results), 'source')} for {len(STUDENTS)} students ("
        + ", ".join(_count(n, kind) for kind, n in sorted(kinds.items()))
        + "): "
        + ", ".join(f"{statuses[s]} {s.replace('_', ' ')}" for s in sorted(statuses, key=_status_order))
    )


def _status_order(status: str) -> tuple[int, str]:
    return (0 if status == "completed" else 1, status)


def _count(n: int, noun: str) -> str:
    """'1 note', '5 notes'; 'audio' and 'photo' counted the same way ('2 audios' reads oddly: 'audio')."""
    plural = noun if noun == "audio" or n == 1 else f"{noun}s"
    return f"{n} {plural}"


def run_demo() -> int:
    """Run the demo; returns a process exit code."""
    state = stack.up()
    print(f"embedded stack up in {state.home}: {', '.join(sorted({w.service for w in state.workers}))}")
    os.environ.update(state.env)
    settings = Settings()
    results = asyncio.run(_ingest_all(settings))
    failed = [r for r in results if r["status"] != "completed"]
    print(f"\n{summary(results)}\n")
    # Exactly the demo's sources, whatever else the stack holds (a second run, other work).
    ids = [uuid.UUID(str(r["source_id"])) for r in results]
    report = asyncio.run(fetch_status(settings, source_id=None, user_id=None, source_ids=ids, limit=len(ids)))
    print(render_status(report))
    for student, question, content_type in QUESTIONS:
        user_id, class_id = _ids(student)
        only = f" --type {content_type}" if content_type else ""
        print(f"\n$ lmgpa search --user {user_id} --class {class_id}{only} {question!r}   # {student}")
        # What the printed command does: ask the stack's search API, which reads Qdrant.
        hits = search_via_api(
            settings, question, user_id=user_id, class_id=class_id, content_type=content_type, limit=3
        )
        for rank, hit in enumerate(hits, start=1):
            meta = hit["metadata"]
            where = f" p.{meta['page_start']}" if meta.get("page_start") else ""
            if meta.get("start_seconds") is not None:
                where = f" {meta['start_seconds']:.0f}-{meta['end_seconds']:.0f} s"
            excerpt = " ".join(str(hit["text"]).split())[:100]
            print(
                f"  {rank}. {hit['score']:.3f} {hit['score_kind']} [{meta.get('content_type')}] {meta.get('title')!r}{where}: {excerpt}…"
            )
    print("\nThe stack is still running. Try `.venv/bin/lmgpa status` or `.venv/bin/lmgpa search ...`;")
    print("stop it with `make down` (or `.venv/bin/lmgpa dev down`).")
    return 1 if failed else 0
