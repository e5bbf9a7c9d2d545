"""Benchmarks runnable as `python -m shared.bench.<name>`; they print figures and assert nothing."""

from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
"""The real third-party samples handed to the project: `../shared/data/` beside the checkout."""
