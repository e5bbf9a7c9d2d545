"""Local object storage: files live under one root; URLs that point anywhere else are refused."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.errors import PermanentError


@dataclass(frozen=True)
class StoredFile:
    """A file in storage, checked to be inside the root."""

    url: str
    path: Path
    size_bytes: int


class LocalStorage:
    """Storage rooted at one folder; ``file://`` URLs or paths relative to the root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def url_for(self, relative: str) -> str:
        """The file:// URL of a path relative to the root."""
        return (self.root / relative).as_uri()

    def resolve(self, url: str) -> StoredFile:
        """The file a URL names, refusing other schemes, other hosts, and anything outside the root."""
        parsed = urlparse(url)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise PermanentError(
                    "storage_url_refused", f"file URLs on other hosts are refused: {parsed.netloc}"
                )
            candidate = Path(unquote(parsed.path))
        elif parsed.scheme == "":
            candidate = self.root / unquote(url)
        else:
            raise PermanentError("storage_url_refused", f"storage scheme {parsed.scheme!r} is not allowed")
        path = candidate.resolve()  # follows symlinks: one pointing out of the root is caught below
        if not path.is_relative_to(self.root):
            raise PermanentError("storage_url_refused", "the storage URL points outside the storage root")
        if not path.is_file():
            raise PermanentError("file_not_found", "no file at the storage URL")
        return StoredFile(url=path.as_uri(), path=path, size_bytes=path.stat().st_size)

    def put(self, source: Path, *, user_id: uuid.UUID) -> StoredFile:
        """Copy a local file into storage under the user's folder; returns where it is."""
        target_dir = self.root / str(user_id)
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{uuid.uuid4().hex[:12]}-{source.name}"
        shutil.copyfile(source, target)
        return self.resolve(target.as_uri())
