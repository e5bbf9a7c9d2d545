"""The newcomer's path: `lmgpa dev up`, then ingest, status, search and replay through the CLI, every worker a
separate process; afterwards the local Qdrant folder is opened directly to check the vectors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.vectors.records import point_id
from tests.e2e.cli import lmgpa, lmgpa_in, purge
from tests.media.documents import docx

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Named as `lmgpa dev up` names it, so that a command run in a folder below its parent finds it.
    home = tmp_path_factory.mktemp("course") / ".lmgpa"
    up = lmgpa(home, "dev", "up")
    assert "worker upload-0" in up.stdout and "worker indexing-0" in up.stdout
    try:
        yield home
    finally:
        purge(home)


def refused_uploads(home: Path) -> list[dict[str, Any]]:
    """The upload worker's dead letters of invalid events, oldest first, as `lmgpa dlq list --json` shows them."""
    letters = json.loads(lmgpa(home, "dlq", "list", "--json").stdout)
    return [d for d in letters if (d["consumer"], d["error_code"]) == ("upload", "invalid_event")]


def wait_for_count(look: Any, count: int, timeout: float = 120) -> list[dict[str, Any]]:
    """Poll `look` until it returns `count` items."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = look()
    while len(found) < count and time.monotonic() < deadline:
        time.sleep(1)
        found = look()
    assert len(found) == count, found
    return found


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The one or two lines a failed command printed, checked for their shape."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result
    assert 1 <= len(lines) <= 2 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", result
    return lines


def test_the_cli_finds_the_stack_from_a_folder_outside_the_repository(
    stack_home: Path, tmp_path: Path
) -> None:
    # Two levels below the folder holding .lmgpa, outside the repository, with no LMGPA_ variable and a HOME
    # of its own: only walking up from the current directory finds the stack.
    folder = stack_home.parent / "week-3" / "notes"
    folder.mkdir(parents=True)
    assert REPO not in (folder, *folder.parents) and not (folder / ".lmgpa").exists()
    user_home = tmp_path / "home"
    user_home.mkdir()
    text = "# Glycolysis\n\nIn the cytosol, glucose is split into two pyruvates:\tnet 2 ATP and 2 NADH. Étape 1 🧪\n"
    (folder / "glycolysis.md").write_bytes(text.encode("utf-16"))  # a BOM and UTF-16: decoded, not refused
    user, klass = uuid.uuid4(), uuid.uuid4()

    ingested = lmgpa_in(
        folder,
        "ingest",
        "glycolysis.md",
        "--user",
        str(user),
        "--class",
        str(klass),
        "--create-owner",
        "--wait",
        "--timeout",
        "180",
        "--json",
        user_home=user_home,
    )

    assert ingested.returncode == 0, ingested.stderr
    result = json.loads(ingested.stdout)
    assert result["status"] == "completed" and result["chunk_count"] >= 1
    shown = lmgpa_in(folder, "status", result["source_id"], "--json", user_home=user_home)
    assert shown.returncode == 0, shown.stderr
    [source] = json.loads(shown.stdout)["sources"]
    assert source["status"] == "completed"
    assert all(
        "T" in stamp and stamp.endswith("+00:00")
        for stamp in [source["updated_at"], *(st["finished_at"] for st in source["stages"])]
    )
    exported = lmgpa_in(folder, "dev", "env", user_home=user_home)
    assert exported.returncode == 0 and f"{stack_home / 'storage'}" in exported.stdout
    dsn = json.loads(
        dict(line.removeprefix("export ").split("=", 1) for line in exported.stdout.splitlines())[
            "LMGPA_DATABASE_URL"
        ]
    )
    import asyncpg

    async def stored() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            content: str = await conn.fetchval(
                "SELECT content FROM notes WHERE id = $1", uuid.UUID(result["source_id"])
            )
            return content
        finally:
            await conn.close()

    assert asyncio.run(stored()) == text

    # Where no stack is above, nothing falls back to default ports: the command refuses and says how to start one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lines = error_lines(lmgpa_in(elsewhere, "status", user_home=user_home))
    assert lines[0].startswith("error: no stack running") and "lmgpa dev up" in lines[1]


def test_bad_input_is_one_or_two_lines_with_a_hint_and_a_nonzero_exit(
    stack_home: Path, tmp_path: Path
) -> None:
    owner, klass, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    lmgpa(
        stack_home,
        "ingest",
        "--note",
        "A first note.",
        "--user",
        str(owner),
        "--class",
        str(klass),
        "--create-owner",
    )
    note = tmp_path / "notes.md"
    note.write_text("# Notes\n\nThe mitochondrion is the site of oxidative phosphorylation.\n")
    essay = tmp_path / "essay.docx"
    essay.write_bytes(docx())
    whose = ["--user", str(owner), "--class", str(klass)]

    def fails(*args: str) -> subprocess.CompletedProcess[str]:
        return lmgpa(stack_home, *args, check=False)

    cases: list[tuple[subprocess.CompletedProcess[str], int, tuple[str, ...]]] = [
        (fails("status", str(stranger)), 1, (f"source {stranger} not found", "lmgpa status")),
        (
            fails("ingest", "--note", "hello", "--user", str(stranger), "--class", str(klass)),
            1,
            (f"unknown user {stranger}", "--create-owner"),
        ),
        (
            fails("ingest", "--note", "hello", "--user", str(owner), "--class", str(stranger)),
            1,
            (f"unknown class {stranger}", "--create-owner"),
        ),
        (
            fails("ingest", str(note), "--kind", "video", *whose),
            2,
            ("'video' is not one of 'audio', 'photo', 'textbook', 'note'", "lmgpa ingest --help"),
        ),
        (fails("ingest", str(essay), "--kind", "note", *whose), 1, ("not_text", "ZIP archive")),
        (fails("ingest", str(essay), *whose), 2, ("cannot tell the kind", "--kind")),
    ]
    # A server that is not there: named, with its address.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cases.append(
        (
            lmgpa_in(
                tmp_path,
                "status",
                user_home=tmp_path,
                env={"LMGPA_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/lmgpa"},
            ),
            1,
            (f"PostgreSQL is not reachable at 127.0.0.1:{port} (connection refused)", "LMGPA_DATABASE_URL"),
        )
    )
    for result, code, expected in cases:
        error_lines(result)
        assert result.returncode == code, result
        assert all(text in result.stderr for text in expected), result.stderr
    # --debug (or LMGPA_DEBUG=1) shows the traceback.
    debug = lmgpa(stack_home, "--debug", "status", str(stranger), check=False)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


def test_ingest_status_search_and_replay_through_separate_processes(stack_home: Path, tmp_path: Path) -> None:
    ps = lmgpa(stack_home, "dev", "ps").stdout
    assert ps.count(" up") >= 6 and "DOWN" not in ps

    user, klass, stranger = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    note = tmp_path / "krebs-cycle.md"
    note.write_text(
        "# The Krebs cycle\n\nThe citric acid cycle runs in the mitochondrial matrix. Each turn oxidises an acetyl "
        "group from acetyl-CoA to two molecules of carbon dioxide, and stores the energy as three NADH, one FADH2 "
        "and one GTP. The NADH and FADH2 feed the electron transport chain, which makes most of the cell's ATP."
    )
    ingested = json.loads(
        lmgpa(
            stack_home,
            "ingest",
            str(note),
            "--user",
            str(user),
            "--class",
            str(klass),
            "--create-owner",
            "--wait",
            "--timeout",
            "180",
            "--json",
        ).stdout
    )
    assert ingested["status"] == "completed" and ingested["kind"] == "note" and ingested["chunk_count"] >= 1
    # Logs carry ids, never document text or secrets.
    logs = "".join(p.read_text(errors="replace") for p in (stack_home / "logs").glob("*.log"))
    assert ingested["source_id"] in logs
    assert "citric acid" not in logs.lower() and "acetyl" not in logs.lower()
    dsn = json.loads(
        dict(
            line.removeprefix("export ").split("=", 1)
            for line in lmgpa(stack_home, "dev", "env").stdout.splitlines()
        )["LMGPA_DATABASE_URL"]
    )
    assert dsn not in logs
    other = json.loads(
        lmgpa(
            stack_home,
            "ingest",
            "--note",
            "Vectors add tip to tail; the dot product measures alignment.",
            "--user",
            str(user),
            "--class",
            str(klass),
            "--wait",
            "--json",
        ).stdout
    )
    assert other["status"] == "completed"

    status = json.loads(lmgpa(stack_home, "status", ingested["source_id"], "--json").stdout)
    [source] = status["sources"]
    assert [s["stage"] for s in source["stages"]] == ["upload", "embedding", "indexing"]
    assert all(s["status"] == "completed" for s in source["stages"])
    assert "completed" in lmgpa(stack_home, "status").stdout

    hits = json.loads(
        lmgpa(
            stack_home,
            "search",
            "where does the citric acid cycle happen?",
            "--user",
            str(user),
            "--class",
            str(klass),
            "--json",
        ).stdout
    )
    assert hits[0]["source_id"] == ingested["source_id"] and hits[0]["score"] > 0.3
    assert {"score", "text", "metadata", "content_type", "source_id"} <= set(hits[0])
    assert hits[0]["metadata"]["user_id"] == str(user)
    nothing = json.loads(
        lmgpa(
            stack_home,
            "search",
            "citric acid cycle",
            "--user",
            str(stranger),
            "--class",
            str(klass),
            "--json",
        ).stdout
    )
    assert nothing == []

    # An upload the upload worker would refuse for its owner is refused before it is sent, with what to do.
    refused = lmgpa(
        stack_home,
        "ingest",
        "--note",
        "not mine",
        "--user",
        str(stranger),
        "--class",
        str(klass),
        "--wait",
        "--json",
        check=False,
    )
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"unknown user {stranger}" in refused.stderr and "--create-owner" in refused.stderr

    # Replaying the fixtures through the CLI, twice, leaves the same sources and vectors.
    seed = json.loads((FIXTURES / "owners.json").read_text())
    for user_row in seed["users"]:
        for class_row in (c for c in seed["classes"] if c["user_id"] == user_row["id"]):
            lmgpa(
                stack_home,
                "ingest",
                "--note",
                "seed",
                "--user",
                user_row["id"],
                "--class",
                class_row["id"],
                "--create-owner",
                "--wait",
            )
    files = [
        str(p)
        for p in sorted((FIXTURES / "events" / "lmgpa.source.uploaded.v1").glob("note-chain-rule.json"))
    ]
    for _ in range(2):
        assert "published 1 event" in lmgpa(stack_home, "replay", *files).stdout
    chain_hits = json.loads(
        lmgpa(
            stack_home,
            "search",
            "differentiate sin of x squared",
            "--user",
            seed["users"][0]["id"],
            "--class",
            seed["classes"][0]["id"],
            "--json",
        ).stdout
    )
    assert chain_hits and chain_hits[0]["metadata"]["title"] == "Chain rule, with worked examples"

    # A malformed upload is dead-lettered; an operator sees it with `dlq list` and sends it back with
    # `dlq replay` (still malformed, so it is parked again).
    before = len(refused_uploads(stack_home))
    lmgpa(
        stack_home,
        "replay",
        str(FIXTURES / "events" / "lmgpa.source.uploaded.v1" / "upload-unknown-kind.json"),
    )
    letter = wait_for_count(lambda: refused_uploads(stack_home), before + 1)[-1]
    assert letter["original_topic"] == "lmgpa.source.uploaded.v1" and "kind" in letter["reason"]
    replayed = lmgpa(stack_home, "dlq", "replay", "--id", letter["dead_letter_id"]).stdout
    assert "replayed 1 message(s)" in replayed
    again = wait_for_count(lambda: refused_uploads(stack_home), before + 2)[-1]
    assert (
        again["original_key"] == letter["original_key"]
        and again["dead_letter_id"] != letter["dead_letter_id"]
    )

    # The backend deletes a source: `lmgpa delete` publishes it, and its chunks leave Chroma (and Qdrant:
    # counted below, once the stack is down and the indexing worker has let go of the local Qdrant folder).
    lmgpa(stack_home, "delete", "--user", str(user), "--class", str(klass), "--source", other["source_id"])

    def still_found() -> bool:
        hits = json.loads(
            lmgpa(
                stack_home, "search", "dot product", "--user", str(user), "--class", str(klass), "--json"
            ).stdout
        )
        return any(h["source_id"] == other["source_id"] for h in hits)

    deadline = time.monotonic() + 120
    while still_found() and time.monotonic() < deadline:
        time.sleep(1)
    assert not still_found(), "a deleted source is never found again"

    # One more worker, started by hand from `lmgpa dev env`, joins the running stack.
    env_lines = lmgpa(stack_home, "dev", "env").stdout.splitlines()
    exported = dict(line.removeprefix("export ").split("=", 1) for line in env_lines)
    assert {
        "LMGPA_KAFKA_BOOTSTRAP_SERVERS",
        "LMGPA_DATABASE_URL",
        "LMGPA_CHROMA_URL",
        "LMGPA_QDRANT_URL",
    } <= set(exported)
    assert "LMGPA_QDRANT_PATH" not in exported, "the embedded stack never runs Qdrant's local mode"
    extra = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.main", "worker", "embedding"],
        cwd=REPO,
        env={**os.environ, **{k: json.loads(v) for k, v in exported.items()}, "LMGPA_LOG_FORMAT": "json"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        third = json.loads(
            lmgpa(
                stack_home,
                "ingest",
                "--note",
                "Entropy of an isolated system never decreases.",
                "--user",
                str(user),
                "--class",
                str(klass),
                "--wait",
                "--json",
            ).stdout
        )
        assert third["status"] == "completed"
    finally:
        extra.terminate()
        output, _ = extra.communicate(timeout=60)
    assert extra.returncode == 0, output[-2000:]
    assert "worker_started" in output

    # The stack's Qdrant is a server: the collection has the tenant and filter indexes, and holds exactly the
    # chunks under deterministic ids, live and again after the whole stack was stopped and started.
    qdrant_url = json.loads(exported["LMGPA_QDRANT_URL"])
    schema = httpx.get(f"{qdrant_url}/collections/lmgpa_chunks", timeout=10).json()["result"][
        "payload_schema"
    ]
    assert schema["user_id"]["data_type"] == "keyword" and schema["user_id"]["params"]["is_tenant"] is True
    assert {name: schema[name]["data_type"] for name in schema} == {
        "user_id": "keyword",
        "class_id": "keyword",
        "content_type": "keyword",
        "source_id": "keyword",
        "visible": "bool",
        "generation": "integer",
    }
    from qdrant_client import QdrantClient, models

    def census() -> tuple[list[str], int]:
        client = QdrantClient(url=qdrant_url)
        try:
            points, _ = client.scroll(
                "lmgpa_chunks",
                scroll_filter=models.Filter(
                    must=[
                        models.FieldCondition(
                            key="source_id", match=models.MatchValue(value=ingested["source_id"])
                        )
                    ]
                ),
                limit=100,
            )
            mine = models.Filter(
                must=[models.FieldCondition(key="user_id", match=models.MatchValue(value=str(user)))]
            )
            return sorted(str(p.id) for p in points), client.count("lmgpa_chunks", count_filter=mine).count
        finally:
            client.close()

    expected = (
        sorted(point_id(uuid.UUID(ingested["source_id"]), i) for i in range(ingested["chunk_count"])),
        sum(x["chunk_count"] for x in (ingested, third)),  # the deleted source's points are gone
    )
    assert census() == expected
    lmgpa(stack_home, "dev", "down")
    lmgpa(stack_home, "dev", "up")  # the fixture's teardown purges it
    qdrant_url = json.loads(
        dict(
            line.removeprefix("export ").split("=", 1)
            for line in lmgpa(stack_home, "dev", "env").stdout.splitlines()
        )["LMGPA_QDRANT_URL"]
    )
    assert census() == expected, "the Qdrant server kept its points across a stop and start"
