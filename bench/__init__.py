"""Benchmarks: `python -m bench [--quick]`. Prints a table and one JSON object."""
