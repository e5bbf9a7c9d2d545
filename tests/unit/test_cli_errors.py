"""`explain`: every error a CLI command can end with becomes one or two lines with a hint and an exit code.
The servers' errors are the real ones their clients raise against a port where nothing listens."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.cli.errors import CliError, Failure, NoStackError, explain
from shared.devstack.servers import ServerStartError
from shared.errors import PermanentError, TransientError
from shared.events.models import SourceUploaded
from shared.settings import Settings

# qdrant-client's own note that the (absent) server did not say its version, whenever it gets to it.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def nowhere(closed_port: int) -> Settings:
    """Settings whose every server is at the closed port."""
    return Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/lmgpa",  # type: ignore[arg-type]
        kafka_bootstrap_servers=f"127.0.0.1:{closed_port}",
        chroma_url=f"http://127.0.0.1:{closed_port}",
        qdrant_url=f"http://127.0.0.1:{closed_port}",
    )


def raised(coroutine: object) -> BaseException:
    """The error a coroutine ends with."""
    try:
        asyncio.run(coroutine)  # type: ignore[arg-type]
    except Exception as error:
        return error
    raise AssertionError("it did not fail")


def assert_short(failure: Failure) -> None:
    lines = failure.lines()
    assert 1 <= len(lines) <= 2 and failure.exit_code != 0
    assert lines[0].startswith("error: ") and all("\n" not in line for line in lines)
    assert not any("Traceback" in line for line in lines)


async def _postgres(settings: Settings) -> None:
    from shared.db.pool import create_pool

    await create_pool(settings.database_dsn())


async def _broker(settings: Settings) -> None:
    from shared.broker import make_broker

    async with make_broker(settings, service="cli"):
        pass


async def _chroma(settings: Settings) -> None:
    from shared.vectors.chroma import make_chroma_client

    await make_chroma_client(settings)


async def _qdrant(settings: Settings) -> None:
    from shared.vectors.qdrant import make_qdrant_client

    client = make_qdrant_client(settings)
    try:
        await client.get_collections()
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("call", "name", "variable", "address"),
    [
        (_postgres, "PostgreSQL", "LMGPA_DATABASE_URL", "127.0.0.1:{port} (connection refused)"),
        (_broker, "The Kafka broker", "LMGPA_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:{port}"),
        (_chroma, "Chroma", "LMGPA_CHROMA_URL", "http://127.0.0.1:{port}"),
        (_qdrant, "Qdrant", "LMGPA_QDRANT_URL", "http://127.0.0.1:{port}"),
    ],
    ids=["postgres", "broker", "chroma", "qdrant"],
)
def test_an_unreachable_server_is_named_with_its_address(
    call: object, name: str, variable: str, address: str, nowhere: Settings, closed_port: int
) -> None:
    error = raised(call(nowhere))  # type: ignore[operator]

    failure = explain(error, settings=nowhere)

    assert_short(failure)
    assert failure.message == f"{name} is not reachable at {address.format(port=closed_port)}" or (
        failure.message.startswith(f"{name} is not reachable at {address.format(port=closed_port)} (")
    )
    assert failure.hint is not None and variable in failure.hint and "lmgpa dev up" in failure.hint

    in_a_stack = explain(error, settings=nowhere, stack_home=Path("/srv/course/.lmgpa"))
    assert in_a_stack.message == failure.message
    assert in_a_stack.hint is not None and "/srv/course/.lmgpa" in in_a_stack.hint
    assert "lmgpa dev ps" in in_a_stack.hint and "lmgpa dev up" in in_a_stack.hint
    # The stack was found, but this server's address was the user's own variable: about that variable.
    own = explain(error, settings=nowhere, stack_home=Path("/srv/course/.lmgpa"), stack_variables={"LMGPA_X"})
    assert own.hint == failure.hint


def test_the_address_comes_from_the_error_when_settings_were_never_built(closed_port: int) -> None:
    error = raised(_postgres(Settings(database_url=f"postgresql://u@127.0.0.1:{closed_port}/x")))  # type: ignore[arg-type]

    assert explain(error).message.startswith(f"PostgreSQL is not reachable at 127.0.0.1:{closed_port}")


@pytest.mark.parametrize(
    ("code", "name"), [("chroma_unavailable", "Chroma"), ("qdrant_unavailable", "Qdrant")]
)
def test_the_stores_outage_guards_are_unreachable_servers(code: str, name: str, nowhere: Settings) -> None:
    failure = explain(TransientError(code, "All connection attempts failed"), settings=nowhere)

    assert_short(failure)
    assert failure.message.startswith(f"{name} is not reachable at http://127.0.0.1:")


def test_a_bad_option_value_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as invalid:
        SourceUploaded(
            event_id=uuid.uuid4(),
            correlation_id=uuid.uuid4(),
            producer="lmgpa-cli",
            kind="video",  # type: ignore[arg-type]
            user_id=uuid.uuid4(),
            class_id=uuid.uuid4(),
            title="notes",
            text="hello",
        )

    failure = explain(invalid.value, command="ingest")

    assert_short(failure)
    assert failure.message.startswith("invalid kind: ")
    assert all(f"'{kind}'" in failure.message for kind in ("audio", "photo", "textbook", "note"))
    assert failure.hint == "`lmgpa ingest --help` lists the valid values" and failure.exit_code == 2


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGPA_SESSION_TIMEOUT_MS", "soon")
    with pytest.raises(ValidationError) as invalid:
        Settings()

    failure = explain(invalid.value)

    assert_short(failure)
    assert failure.message.startswith("invalid LMGPA_SESSION_TIMEOUT_MS: ")
    assert failure.hint is not None and "LMGPA_SESSION_TIMEOUT_MS" in failure.hint


def test_a_server_that_did_not_start_points_at_its_log(tmp_path: Path) -> None:
    log = tmp_path / "chroma.log"
    error = ServerStartError(
        f"chroma did not answer on port 8123 within 60 s\n--- last lines of {log} ---\nboom\n"
    )

    failure = explain(error)

    assert_short(failure)
    assert (
        failure.message
        == "a server of the stack did not start: chroma did not answer on port 8123 within 60 s"
    )
    assert failure.hint == f"its log: {log}"


def test_the_projects_own_errors_say_what_and_what_to_do() -> None:
    assert explain(PermanentError("not_text", "the note is not text: ...")).message == (
        "not_text: the note is not text: ..."
    )
    unknown = explain(CliError("unknown user 7c1e", "pass --create-owner"))
    assert (unknown.message, unknown.hint, unknown.exit_code) == (
        "unknown user 7c1e",
        "pass --create-owner",
        1,
    )
    none = explain(NoStackError(None, ["LMGPA_DATABASE_URL"]))
    assert_short(none)
    assert none.message.startswith("no stack running")
    assert none.hint is not None and "`lmgpa dev up`" in none.hint and "LMGPA_DATABASE_URL" in none.hint
    stopped = explain(NoStackError(Path("/srv/course/.lmgpa")))
    assert stopped.message == "no stack running in /srv/course/.lmgpa"
    assert stopped.hint == "start one with `lmgpa dev up`"


def test_anything_else_is_one_line_and_points_at_debug() -> None:
    failure = explain(KeyError("stages"))
    assert_short(failure)
    assert failure.message == "KeyError: 'stages'"
    assert failure.hint is not None and "--debug" in failure.hint and "LMGPA_DEBUG=1" in failure.hint

    missing = explain(FileNotFoundError(2, "No such file or directory", "notes.md"))
    assert (missing.message, missing.hint) == ("No such file or directory: notes.md", None)
