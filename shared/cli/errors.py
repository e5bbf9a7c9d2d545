"""What the CLI says when a command fails: one line of what went wrong and one of what to do, and an exit code;
never a traceback (``lmgpa --debug`` or ``LMGPA_DEBUG=1`` shows it). `explain` maps every error it knows."""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from pydantic import ValidationError

from shared.devstack.servers import ServerStartError
from shared.devstack.stack import WorkerStartError
from shared.errors import PipelineError, TransientError
from shared.settings import Settings

DEBUG_HINT = "run it again with --debug (lmgpa --debug ...) or LMGPA_DEBUG=1 for the traceback"
START_HINT = "start one with `lmgpa dev up`"


@dataclass(frozen=True)
class Failure:
    """How a failed command ends: what went wrong, what to do about it, and the exit code."""

    message: str
    hint: str | None = None
    exit_code: int = 1

    def lines(self) -> list[str]:
        """The one or two lines to print on stderr."""
        return [f"error: {self.message}", *([f"hint: {self.hint}"] if self.hint else [])]


class CliError(Exception):
    """An error the CLI reports as it is, with a hint (an unknown user, a source not found)."""

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.failure = Failure(message, hint, exit_code)


class NoStackError(CliError):
    """No stack was found and the settings a command needs were not given either."""

    def __init__(self, home: Path | None, missing: Sequence[str] = ()) -> None:
        where = f"in {home}" if home else "(no .lmgpa folder here or above, nor ~/.lmgpa, nor LMGPA_DEV_HOME)"
        own = f" (or set {', '.join(missing)} to use servers of your own)" if missing else ""
        super().__init__(f"no stack running {where}", START_HINT + own)


@dataclass(frozen=True)
class Server:
    """A server the CLI talks to, as a person names it."""

    name: str
    variable: str
    modules: tuple[str, ...]
    """Where its client's code lives: an error raised there (or through there) is about this server."""


SERVERS = {
    "postgres": Server("PostgreSQL", "LMGPA_DATABASE_URL", ("asyncpg",)),
    "broker": Server("the Kafka broker", "LMGPA_KAFKA_BOOTSTRAP_SERVERS", ("aiokafka", "faststream.kafka")),
    "chroma": Server("Chroma", "LMGPA_CHROMA_URL", ("chromadb",)),
    "qdrant": Server("Qdrant", "LMGPA_QDRANT_URL", ("qdrant_client",)),
}
UNAVAILABLE_CODES = {"chroma_unavailable": "chroma", "qdrant_unavailable": "qdrant"}
"""The TransientError codes of the vector stores' outage guards (shared.vectors)."""
_CONNECTION_ERROR_TYPES = {
    "aiokafka.errors.KafkaConnectionError",
    "qdrant_client.http.exceptions.ResponseHandlingException",
    "asyncpg.exceptions.CannotConnectNowError",
    "asyncpg.exceptions.ConnectionDoesNotExistError",
}
_ADDRESS = re.compile(r"\('([0-9a-fA-F.:]+)', (\d+)")


def explain(
    error: BaseException,
    *,
    settings: Settings | None = None,
    stack_home: Path | None = None,
    stack_variables: Collection[str] | None = None,
    command: str | None = None,
) -> Failure:
    """The message, hint and exit code for an error a command raised. ``settings`` and ``stack_home`` are what the
    command ran with (to name a server's address and the stack), ``stack_variables`` the LMGPA_ variables the stack
    gave (default: all; the others were the user's own); ``command`` is its name (for a --help hint)."""
    stack = (stack_home, stack_variables)
    if isinstance(error, CliError):
        return error.failure
    if isinstance(error, TransientError) and error.code in UNAVAILABLE_CODES:
        return _unreachable(UNAVAILABLE_CODES[error.code], error, settings, stack)
    if isinstance(error, PipelineError):
        return Failure(f"{error.code}: {error.reason}")
    if isinstance(error, ServerStartError):
        return _server_start(error)
    if isinstance(error, ValidationError):
        return _invalid(error, command)
    server = _server_of(error)
    if server is not None and _is_connection_error(error):
        return _unreachable(server, error, settings, stack)
    if server == "postgres":
        return _postgres(error)
    if server is not None:
        return Failure(f"{SERVERS[server].name}: {_first_line(error)}", DEBUG_HINT)
    if isinstance(error, OSError) and error.filename:
        return Failure(f"{error.strerror or _first_line(error)}: {error.filename}")
    if isinstance(error, KeyboardInterrupt):
        return Failure("interrupted", exit_code=130)
    return Failure(f"{type(error).__name__}: {_first_line(error)}", f"this looks like a bug; {DEBUG_HINT}")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and every error it was raised from or during, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _frames(traceback: TracebackType | None) -> Iterator[str]:
    """The module of every frame of a traceback."""
    while traceback is not None:
        yield str(traceback.tb_frame.f_globals.get("__name__", ""))
        traceback = traceback.tb_next


def _server_of(error: BaseException) -> str | None:
    """Which server's client raised the error (by the modules of its types and frames), if any."""
    for item in _chain(error):
        for module in (type(item).__module__, *_frames(item.__traceback__)):
            for key, server in SERVERS.items():
                if any(module == m or module.startswith(m + ".") for m in server.modules):
                    return key
    return None


def _is_connection_error(error: BaseException) -> bool:
    """Whether the server could not be reached at all (refused, timed out, unknown host, dropped)."""
    for item in _chain(error):
        kind = f"{type(item).__module__}.{type(item).__qualname__}"
        if isinstance(item, OSError) or kind in _CONNECTION_ERROR_TYPES:
            return True
        if type(item).__module__.startswith("httpx") and type(item).__name__ in (
            "ConnectError",
            "ConnectTimeout",
            "ReadTimeout",
            "RemoteProtocolError",
        ):
            return True
    return False


def _address(server: str, error: BaseException, settings: Settings | None) -> str:
    """Where the command looked for the server."""
    if settings is not None:
        if server == "postgres":
            url = urlparse(settings.database_dsn())
            return f"{url.hostname or 'localhost'}:{url.port or 5432}"
        if server == "broker":
            return settings.kafka_bootstrap_servers
        if server == "chroma":
            return settings.chroma_url
        if server == "qdrant":
            return settings.qdrant_url or f"the folder {settings.qdrant_path}"
    for item in _chain(error):
        found = _ADDRESS.search(str(item))
        if found:
            return f"{found.group(1)}:{found.group(2)}"
    return "its configured address"


def _unreachable(
    server: str,
    error: BaseException,
    settings: Settings | None,
    stack: tuple[Path | None, Collection[str] | None],
) -> Failure:
    why = next(
        (
            (os.strerror(item.errno) if item.errno else str(item.strerror or type(item).__name__)).lower()
            for item in _chain(error)
            if isinstance(item, OSError) and (item.strerror or item.errno)
        ),
        "no answer",
    )
    named = SERVERS[server]
    home, variables = stack
    hint = (
        f"the stack in {home} is not (fully) running: `lmgpa dev ps` shows it, `lmgpa dev up` starts it"
        if home is not None and (variables is None or named.variable in variables)
        else f"start it, or point {named.variable} at it (the embedded stack: `lmgpa dev up`)"
    )
    name = named.name[0].upper() + named.name[1:]
    return Failure(f"{name} is not reachable at {_address(server, error, settings)} ({why})", hint)


def _postgres(error: BaseException) -> Failure:
    name = type(error).__name__
    if name == "UndefinedTableError":
        return Failure(f"PostgreSQL: {_first_line(error)}", "apply the migrations: `lmgpa migrate`")
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError", "InvalidCatalogNameError"):
        return Failure(f"PostgreSQL refused the connection: {_first_line(error)}", "check LMGPA_DATABASE_URL")
    return Failure(f"PostgreSQL: {_first_line(error)}", DEBUG_HINT)


def _server_start(error: ServerStartError) -> Failure:
    text = str(error)
    log = re.search(r"--- last lines of (.+?) ---", text)
    hint = f"its log: {log.group(1)}" if log else DEBUG_HINT
    if isinstance(error, WorkerStartError):
        return Failure(_first_line(error), hint)
    return Failure(f"a server of the stack did not start: {_first_line(error)}", hint)


def _invalid(error: ValidationError, command: str | None) -> Failure:
    problems = error.errors()
    first = problems[0]
    where = ".".join(str(part) for part in first["loc"]) or error.title
    settings = error.title == Settings.__name__
    if settings:
        where = f"LMGPA_{where.upper()}"
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    if settings:
        hint = f"fix or unset {where} in your environment"
    else:
        hint = f"`lmgpa {command} --help` lists the valid values" if command else "`lmgpa --help`"
    return Failure(f"invalid {where}: {message}{more}", hint, exit_code=2)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
