"""The two kinds of failure every handler distinguishes."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of the pipeline's own errors: a stable machine code and a clear human reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class PermanentError(PipelineError):
    """Retrying cannot help (invalid event, foreign class, corrupt file, over a limit): fail the source now."""


class TransientError(PipelineError):
    """A server is unavailable or busy: retry with backoff, never mark the source failed for it alone."""
