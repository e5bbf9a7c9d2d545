"""LocalStorage: files under the root resolve; anything pointing elsewhere is refused."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.errors import PermanentError
from shared.storage import LocalStorage

USER = uuid.UUID("7c1e4a52-0b7d-4f0e-9d8c-2a6f3b9e1d44")
AUDIO = b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + b"lecture audio frames " * 64


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "storage"
    (root / str(USER)).mkdir(parents=True)
    (root / str(USER) / "lecture3.m4a").write_bytes(AUDIO)
    (root / str(USER) / "Week 2 notes (draft).txt").write_text("Derivatives measure rates of change.\n")
    (tmp_path / "secrets.txt").write_text("not for students")
    (tmp_path / "storage-evil").mkdir()
    (tmp_path / "storage-evil" / "payload.pdf").write_bytes(b"%PDF-1.7 evil")
    return root


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


def test_file_url_under_root_resolves(storage: LocalStorage, root: Path) -> None:
    url = storage.url_for(f"{USER}/lecture3.m4a")
    assert url.startswith("file:///")

    stored = storage.resolve(url)

    assert stored.path == (root / str(USER) / "lecture3.m4a").resolve()
    assert stored.size_bytes == len(AUDIO)
    assert stored.url == url
    assert storage.resolve(stored.url) == stored


def test_relative_path_resolves_to_the_same_file(storage: LocalStorage) -> None:
    by_path = storage.resolve(f"{USER}/lecture3.m4a")
    by_url = storage.resolve(storage.url_for(f"{USER}/lecture3.m4a"))
    assert by_path == by_url


def test_names_with_spaces_and_parentheses_resolve_by_url_and_path(storage: LocalStorage) -> None:
    url = storage.url_for(f"{USER}/Week 2 notes (draft).txt")
    assert "%20" in url
    stored = storage.resolve(url)
    assert stored.path.name == "Week 2 notes (draft).txt"
    assert storage.resolve(f"{USER}/Week 2 notes (draft).txt") == stored
    assert storage.resolve(f"{USER}/Week%202%20notes%20(draft).txt") == stored


def test_localhost_file_url_resolves(storage: LocalStorage, root: Path) -> None:
    path = (root / str(USER) / "lecture3.m4a").resolve()
    stored = storage.resolve(f"file://localhost{path}")
    assert stored.path == path


def test_dot_segments_that_stay_inside_the_root_resolve(storage: LocalStorage) -> None:
    stored = storage.resolve(f"{USER}/../{USER}/./lecture3.m4a")
    assert stored.path.name == "lecture3.m4a"


def test_absolute_path_inside_the_root_resolves(storage: LocalStorage, root: Path) -> None:
    path = (root / str(USER) / "lecture3.m4a").resolve()
    assert storage.resolve(str(path)).path == path


def _in_root(root: Path) -> str:
    return str((root / str(USER) / "lecture3.m4a").resolve())


# Each builds a URL from (tmp_path, root); tmp_path/secrets.txt and tmp_path/storage-evil are outside the root.
REFUSED = {
    "dotdot": lambda t, r: "../secrets.txt",
    "dotdot_deep": lambda t, r: f"{USER}/../../secrets.txt",
    "dotdot_percent_encoded": lambda t, r: "%2e%2e/secrets.txt",
    "absolute_path_outside": lambda t, r: str((t / "secrets.txt").resolve()),
    "etc_passwd": lambda t, r: "/etc/passwd",
    "file_url_outside": lambda t, r: (t / "secrets.txt").resolve().as_uri(),
    "file_url_dotdot": lambda t, r: f"{r.resolve().as_uri()}/{USER}/../../secrets.txt",
    "file_url_encoded_dotdot": lambda t, r: f"{r.resolve().as_uri()}/%2e%2e/secrets.txt",
    "sibling_with_root_as_prefix": lambda t, r: (t / "storage-evil" / "payload.pdf").resolve().as_uri(),
    "sibling_by_path": lambda t, r: "../storage-evil/payload.pdf",
    "symlink_to_file_outside": lambda t, r: f"{USER}/leak.txt",
    "symlink_to_dir_outside": lambda t, r: f"{USER}/leaky-dir/secrets.txt",
    "http": lambda t, r: "http://cdn.example.com/u/lecture3.m4a",
    "https": lambda t, r: "https://cdn.example.com/u/lecture3.m4a",
    "s3": lambda t, r: "s3://lmgpa-uploads/u/lecture3.m4a",
    "file_other_host": lambda t, r: f"file://otherhost{_in_root(r)}",
    "file_ip_host": lambda t, r: f"file://10.0.0.5{_in_root(r)}",
}


@pytest.mark.parametrize("build", REFUSED.values(), ids=REFUSED.keys())
def test_urls_outside_the_root_are_refused(
    storage: LocalStorage, root: Path, tmp_path: Path, build: Callable[[Path, Path], str]
) -> None:
    (root / str(USER) / "leak.txt").symlink_to(tmp_path / "secrets.txt")
    (root / str(USER) / "leaky-dir").symlink_to(tmp_path, target_is_directory=True)
    url = build(tmp_path, root)

    with pytest.raises(PermanentError) as refused:
        storage.resolve(url)

    assert refused.value.code == "storage_url_refused", url


def test_symlink_inside_the_root_to_a_file_inside_resolves_to_the_target(
    storage: LocalStorage, root: Path
) -> None:
    link = root / str(USER) / "latest.m4a"
    link.symlink_to(root / str(USER) / "lecture3.m4a")

    stored = storage.resolve(f"{USER}/latest.m4a")

    assert stored.path == (root / str(USER) / "lecture3.m4a").resolve()
    assert stored.size_bytes == len(AUDIO)


def test_root_given_through_a_symlink_still_works(tmp_path: Path, root: Path) -> None:
    alias = tmp_path / "storage-alias"
    alias.symlink_to(root, target_is_directory=True)
    storage = LocalStorage(alias)

    assert storage.resolve(f"{USER}/lecture3.m4a").size_bytes == len(AUDIO)
    with pytest.raises(PermanentError) as refused:
        storage.resolve("../secrets.txt")
    assert refused.value.code == "storage_url_refused"


@pytest.mark.parametrize("name", ["missing.m4a", "", "."])
def test_missing_file_or_directory_is_file_not_found(storage: LocalStorage, name: str) -> None:
    with pytest.raises(PermanentError) as by_path:
        storage.resolve(f"{USER}/{name}")
    assert by_path.value.code == "file_not_found"

    with pytest.raises(PermanentError) as by_url:
        storage.resolve(storage.url_for(f"{USER}/{name}"))
    assert by_url.value.code == "file_not_found"


def test_put_copies_into_the_users_folder_and_returns_a_resolvable_url(
    storage: LocalStorage, root: Path, tmp_path: Path
) -> None:
    upload = tmp_path / "incoming" / "Lecture 4 - Integrals.m4a"
    upload.parent.mkdir()
    upload.write_bytes(AUDIO + b"integrals")

    stored = storage.put(upload, user_id=USER)

    assert stored.path.parent == (root / str(USER)).resolve()
    assert stored.path.name.endswith("Lecture 4 - Integrals.m4a")
    assert stored.path.read_bytes() == AUDIO + b"integrals"
    assert stored.size_bytes == len(AUDIO) + len(b"integrals")
    assert storage.resolve(stored.url) == stored
    assert upload.exists()


def test_put_twice_keeps_both_copies(storage: LocalStorage, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_text("Photosynthesis: 6 CO2 + 6 H2O -> C6H12O6 + 6 O2")
    first = storage.put(upload, user_id=USER)
    upload.write_text("Respiration: C6H12O6 + 6 O2 -> 6 CO2 + 6 H2O")
    second = storage.put(upload, user_id=USER)

    assert first.path != second.path
    assert first.path.read_text().startswith("Photosynthesis")
    assert second.path.read_text().startswith("Respiration")


def test_put_creates_the_folder_of_a_new_user(storage: LocalStorage, root: Path, tmp_path: Path) -> None:
    new_user = uuid.UUID("e2b0c9a1-6d3f-4c8b-8a71-5f0d9e3c2b17")
    upload = tmp_path / "scan.jpg"
    upload.write_bytes(b"\xff\xd8\xff\xe0 jpeg")

    stored = storage.put(upload, user_id=new_user)

    assert stored.path.parent == (root / str(new_user)).resolve()
    assert os.path.isdir(root / str(new_user))
