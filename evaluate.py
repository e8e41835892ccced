"""Evaluates an exported SavedModel on a dataset split: `python evaluate.py --help` (the same as `artist-id evaluate`).

The command itself is `artist_id/evaluate.py`; this file runs it from a clone.
"""

from artist_id import cli, evaluate

if __name__ == "__main__":
    cli.run_command(evaluate)
