"""Where the CLI finds the embedded stack: LMGPA_DEV_HOME, else the nearest .lmgpa folder walking up from the
current directory, else ~/.lmgpa; `lmgpa dev up` starts one in ./.lmgpa when none is found."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.devstack import stack


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's home and a course folder three levels deep, no LMGPA_DEV_HOME."""
    monkeypatch.delenv("LMGPA_DEV_HOME", raising=False)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    deep = tmp_path / "projects" / "course" / "week-1" / "notes"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    return tmp_path


def test_nothing_found_is_none_and_dev_up_starts_here(tree: Path) -> None:
    assert stack.find_home() is None
    assert stack.default_home() == Path.cwd() / ".lmgpa"
    assert stack.load_state() is None


def test_the_nearest_lmgpa_folder_above_wins(tree: Path) -> None:
    outer = tree / "projects" / ".lmgpa"
    inner = tree / "projects" / "course" / ".lmgpa"
    outer.mkdir()
    assert stack.find_home() == outer
    inner.mkdir()
    assert stack.find_home() == inner == stack.default_home()
    (inner / stack.STATE_FILE).write_text("{}")  # a file named .lmgpa is no stack
    (tree / "projects" / "course" / "week-1" / ".lmgpa").touch()
    assert stack.find_home() == inner


def test_the_users_own_stack_is_the_last_resort(tree: Path) -> None:
    mine = tree / "home" / ".lmgpa"
    mine.mkdir()
    assert stack.find_home(Path("/")) == mine
    assert stack.find_home() == mine


def test_lmgpa_dev_home_wins_over_everything(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "projects" / ".lmgpa").mkdir()
    monkeypatch.setenv("LMGPA_DEV_HOME", str(tree / "elsewhere"))
    assert stack.find_home() == tree / "elsewhere" == stack.default_home()
