"""The `lmgpa` entry point run in-process: errors end as one or two lines with a hint and a non-zero exit code,
a traceback only with --debug or LMGPA_DEBUG=1; help shows flags as flags; --json timestamps in one format."""

from __future__ import annotations

import json
import logging
import os
import socket
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.cli import main as cli
from shared.cli.backend import _job_dict
from shared.db.jobs import JobRow, StageRow
from shared.devstack.demo import summary
from shared.logging import QUIETED_CLIENTS

REPO = Path(__file__).resolve().parents[2]
USER, CLASS = str(uuid.uuid4()), str(uuid.uuid4())


@pytest.fixture(autouse=True)
def nothing_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No stack to find and no LMGPA_ setting: in a folder of its own, with a home of its own. The client
    loggers the CLI quiets are given back as they were."""
    for key in [k for k in os.environ if k.startswith("LMGPA_")]:
        monkeypatch.delenv(key)
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    levels = {name: logging.getLogger(name).level for name in QUIETED_CLIENTS}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `lmgpa ARGS`."""
    with pytest.raises(SystemExit) as ended:
        cli.main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def assert_error(err: str, *expected: str) -> list[str]:
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err, err
    return lines


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_stack_and_no_settings_is_refused_with_the_command_to_start_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "status")

    assert code == 1 and out == ""
    lines = assert_error(err, "no stack running", "lmgpa dev up", "LMGPA_DATABASE_URL")
    assert lines[1].startswith("hint: ")
    assert run(capsys, "dev", "env")[0] == 1


def test_a_stopped_stack_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "work" / ".lmgpa").mkdir()

    code, _, err = run(capsys, "status")

    assert code == 1
    assert_error(err, f"no stack running in {tmp_path / 'work' / '.lmgpa'}", "lmgpa dev up")


def test_an_unreachable_postgres_is_named_with_its_address(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("LMGPA_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/lmgpa")

    code, _, err = run(capsys, "status")

    assert code == 1
    assert_error(err, f"PostgreSQL is not reachable at 127.0.0.1:{port} (connection refused)")


def test_an_unreachable_broker_is_named_without_the_clients_own_log_lines(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = closed_port()
    monkeypatch.setenv("LMGPA_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")

    code, _, err = run(capsys, "dlq", "list")

    assert code == 1
    assert_error(err, f"The Kafka broker is not reachable at 127.0.0.1:{port}")


def test_a_bad_option_value_lists_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ingest", "notes.md", "--kind", "video", "--user", USER, "--class", CLASS)

    assert code == 2
    assert_error(err, "'video' is not one of 'audio', 'photo', 'textbook', 'note'", "lmgpa ingest --help")
    code, _, err = run(
        capsys, "reprocess", USER, "--kind", "note", "--from", "ocr", "--user", USER, "--class", CLASS
    )
    assert code == 2
    assert_error(err, "'ocr' is not one of 'upload', 'embedding'")


def test_a_binary_note_is_refused_as_not_text_before_anything_is_sent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = closed_port()  # nothing may be reached: the check comes first
    monkeypatch.setenv("LMGPA_DATABASE_URL", f"postgresql://postgres@127.0.0.1:{port}/lmgpa")
    monkeypatch.setenv("LMGPA_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    essay = tmp_path / "essay.docx"
    with zipfile.ZipFile(essay, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document><w:body>An essay.</w:body></w:document>" * 30)

    code, _, err = run(capsys, "ingest", str(essay), "--kind", "note", "--user", USER, "--class", CLASS)

    assert code == 1
    assert_error(err, "error: not_text: the note is not text", "ZIP archive")
    code, _, err = run(capsys, "ingest", str(essay), "--user", USER, "--class", CLASS)
    assert code == 2
    assert_error(err, "cannot tell the kind", "audio | photo | textbook | note")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_debug_shows_the_traceback(
    how: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "environment":
        monkeypatch.setenv("LMGPA_DEBUG", "1")
    code, _, err = run(capsys, *(["--debug"] if how == "option" else []), "status")

    assert code == 1
    assert "Traceback (most recent call last)" in err and "NoStackError" in err
    assert err.strip().splitlines()[-2].startswith("error: no stack running")


def test_help_shows_flags_as_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ingest", "--help")

    assert code == 0
    assert "<bool>" not in out
    flags = {line.split()[0] for line in out.splitlines() if line.strip().startswith("--")}
    assert {"--wait", "--create-owner", "--json", "--help"} <= flags
    assert "--kind <audio|photo|textbook|note>" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "--debug" in out and "LMGPA_DEBUG" in out


def test_the_installed_command_runs_the_wrapper() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]

    assert scripts["lmgpa"] == "shared.cli.main:main"


def test_json_timestamps_are_iso_8601_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2024, 9, 12, 14, 6, 3, 125000, tzinfo=UTC)
    stage = StageRow(
        stage="ocr",
        status="failed",
        attempts=1,
        units_done=0,
        units_total=1,
        unit="photos",
        enqueued_at=at,
        started_at=at,
        finished_at=at,
        heartbeat_at=None,
        error_code="no_text",
        error_message="no text could be read in the photo",
    )
    job = JobRow(
        source_id=uuid.uuid4(),
        kind="photo",
        user_id=uuid.uuid4(),
        class_id=uuid.uuid4(),
        title="Whiteboard",
        status="failed",
        stage="ocr",
        attempts=1,
        error_code="no_text",
        error_message="no text could be read in the photo",
        chunk_count=None,
        correlation_id=None,
        created_at=at,
        updated_at=at,
        stages=(stage,),
    )

    cli._emit({"sources": [_job_dict(job)], "at": at})
    shown = json.loads(capsys.readouterr().out)

    [source] = shown["sources"]
    stamps = [source["updated_at"], shown["at"]] + [
        source["stages"][0][k] for k in ("enqueued_at", "started_at", "finished_at")
    ]
    assert set(stamps) == {"2024-09-12T14:06:03.125000+00:00"}
    assert source["stages"][0]["heartbeat_at"] is None


def test_counts_read_as_english() -> None:
    assert [cli._count(n, "chunk") for n in (0, 1, 2)] == ["0 chunks", "1 chunk", "2 chunks"]
    done = [{"kind": k, "status": "completed"} for k in ("note",) * 5 + ("audio", "photo", "textbook")]
    assert (
        summary(done)
        == "ingested 8 sources for 2 students (1 audio, 5 notes, 1 photo, 1 textbook): 8 completed"
    )
    one_failed = [*done[:7], {"kind": "textbook", "status": "failed"}]
    assert summary(one_failed).endswith(": 7 completed, 1 failed")
    assert not summary(done).endswith(" not") and not summary(one_failed).endswith(" not")
