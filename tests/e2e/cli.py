"""Running the `lmgpa` CLI as a user would, against one embedded stack."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def lmgpa(
    home: Path,
    *args: str,
    check: bool = True,
    timeout: float = 900,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only the stack's home set (no other LMGPA_ variable leaks in from the tests), plus the
    given ``settings`` (a `dev up` passes them on to the workers it starts)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGPA_")}
    # A stack this test run starts stops itself if the run dies before its teardown (killed, timed out).
    env |= {"LMGPA_DEV_HOME": str(home), "LMGPA_DEV_STOP_WITH_PID": str(os.getpid()), "HF_HUB_OFFLINE": "1"}
    env |= settings or {}
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"lmgpa {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def lmgpa_in(
    cwd: Path, *args: str, user_home: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run the installed `lmgpa` command from ``cwd`` as a user in a shell there would: no LMGPA_ variable at
    all (not even LMGPA_DEV_HOME: the stack is found from ``cwd``) unless ``env`` gives some, HOME set to
    ``user_home``. The exit code is the caller's to check."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMGPA_")}
    clean |= {"HOME": str(user_home), "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [str(Path(sys.executable).with_name("lmgpa")), *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def purge(home: Path) -> None:
    """Stop the stack and delete its data, but first copy its workers' and servers' logs beside it
    (``<home>-logs``): a run that failed on CI then leaves their own account of what happened in pytest's
    temporary folder."""
    kept = home.with_name(f"{home.name}-logs")
    for log in home.rglob("*.log"):
        (kept / log.relative_to(home)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, kept / log.relative_to(home))
    lmgpa(home, "dev", "down", "--purge", check=False)
