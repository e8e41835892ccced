"""Trains an artist classifier: `python train.py --help` (the same as `artist-id train`).

The command itself is `artist_id/train.py`; this file runs it from a clone.
"""

from artist_id import cli, train

if __name__ == "__main__":
    cli.run_command(train)
