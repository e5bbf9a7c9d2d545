"""The newcomer's path: `lmgpa dev up`, then ingest, status, search and replay through the CLI, every worker a
separate process; afterwards the local Qdrant folder is opened directly to check the vectors."""

from __future__ import annotations

import json
import os
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
from tests.e2e.cli import lmgpa

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("stack")
    up = lmgpa(home, "dev", "up")
    assert "worker upload-0" in up.stdout and "worker indexing-0" in up.stdout
    try:
        yield home
    finally:
        lmgpa(home, "dev", "down", "--purge", check=False)


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

    # A refused upload is reported with its reason.
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
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error_code"] in ("class_not_owned", "unknown_class")

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
