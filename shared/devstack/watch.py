"""Stops a dev stack once the process it was started for has ended (`lmgpa dev up --stop-with-pid PID`).

A stack's servers and workers are detached processes: they outlive the command that started them, as a stack
should. A test run or script that dies without its teardown (killed, timed out) would leave its stack running,
and its workers would keep reconnecting to ports that a later stack may be given. This watcher, one detached
process per stack, polls the owner's pid and stops the stack (without deleting its data) when it is gone; it
exits by itself once the stack's state file is gone (the stack was stopped the normal way).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from shared.devstack import servers, stack

POLL_SECONDS = 1.0


def watch(home: Path, owner: int, *, poll_seconds: float = POLL_SECONDS) -> bool:
    """Wait until the owner ends (then stop the stack: True) or the stack is stopped by others (False)."""
    while True:
        if not (home / stack.STATE_FILE).exists():
            return False
        if not servers.is_running(owner):
            print(f"process {owner} ended: stopping the stack in {home}", flush=True)
            stack.down(home)
            return True
        time.sleep(poll_seconds)


def main(argv: list[str] | None = None) -> int:
    """`python -m shared.devstack.watch HOME PID`."""
    home, owner = (argv if argv is not None else sys.argv[1:])[:2]
    watch(Path(home), int(owner))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
