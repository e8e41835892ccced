"""Measurements with their baselines: `python -m benchmarks.NAME --help` from the repository's
top; each ends with one JSON line, and `--json_out=results/NAME.json` keeps it (docs/results.md)."""
