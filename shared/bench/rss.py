"""Resident memory of each worker once loaded and idle: `python -m shared.bench.rss` (make bench-rss).

It starts an embedded stack of its own in a temporary folder (the servers, one replica of every worker and the
search API), waits until each process answers /ready (model loaded, consumer groups joined), lets them idle for
a few seconds, then reads each process's resident set (VmRSS) and its peak so far (VmHWM) from /proc. These are
the figures the memory requests in deploy/k8s/workers.yaml come from. Writes JSON with --json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.bench import own_stack, write_json

MIB = 1024 * 1024


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes (Linux /proc)."""
    figures: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024  # reported in kB
    return figures


def measure(idle_seconds: float) -> list[dict[str, Any]]:
    """Start the stack, idle, and read every worker's memory; the stack is stopped whatever happens."""
    with tempfile.TemporaryDirectory(prefix="lmgpa-rss-") as folder:
        home = Path(folder) / ".lmgpa"
        with own_stack(home, replicas=1, search_api=True, reconciler=True) as state:
            time.sleep(idle_seconds)
            rows = []
            for worker in state.workers:
                memory = proc_memory(worker.pid)
                rows.append(
                    {
                        "service": worker.service,
                        "rss_mib": round(memory["VmRSS"] / MIB, 1),
                        "peak_rss_mib": round(memory["VmHWM"] / MIB, 1),
                    }
                )
            return rows


def main() -> None:
    """Print a table of RSS per worker; write JSON with --json."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--idle", type=float, default=10.0, help="Seconds to idle after every worker is ready."
    )
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    rows = measure(args.idle)
    print(f"{'worker':<15} {'RSS MiB':>9} {'peak MiB':>9}   (loaded, ready, idle {args.idle:.0f} s)")
    for row in rows:
        print(f"{row['service']:<15} {row['rss_mib']:>9.1f} {row['peak_rss_mib']:>9.1f}")
    if args.json:
        write_json(args.json, {"idle_seconds": args.idle, "workers": rows})


if __name__ == "__main__":
    main()
