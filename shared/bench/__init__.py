"""Benchmarks runnable as `python -m shared.bench.<name>`; they print figures and assert nothing."""
