"""structlog configured once per process: JSON when not on a TTY, console otherwise."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import structlog

_SECRET_KEYS = frozenset({"password", "database_url", "dsn", "token", "api_key", "secret"})


def _drop_secrets(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a secret reach a log line, whatever a caller passed."""
    for key in list(event_dict):
        if key.lower() in _SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def configure_logging(*, service: str, fmt: str = "auto", level: str = "INFO") -> None:
    """Configure structlog and the standard library's logging for one process."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared_processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a module-level logger first used before a later configure_logging (or inside a test's
        # structlog.testing.capture_logs) would otherwise keep the processors it first saw.
        cache_logger_on_first_use=False,
    )
    # The libraries' own records (aiokafka's group errors, FastStream's consumer errors) in the same format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared_processors],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "chromadb", "faststream"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.contextvars.bind_contextvars(service=service)


QUIETED_CLIENTS = ("aiokafka", "asyncio", "faststream", "httpx", "chromadb", "qdrant_client")


def quiet_clients() -> None:
    """For a one-shot CLI command: the clients' own records (aiokafka's failed connections, asyncio's notes on a
    client left open by a failed start) only repeat the error the CLI reports in one or two lines."""
    for name in QUIETED_CLIENTS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # qdrant-client's note that it could not ask an unreachable server for its version.
    warnings.filterwarnings("ignore", message="Failed to obtain server version", category=UserWarning)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger; log snake_case event names with ids, never document text."""
    return structlog.get_logger(name)
