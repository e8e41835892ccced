"""Trains an artist classifier: `python train.py --help` (the same as `artist-id train`).

The command itself is `artist_id/train.py`; this file runs it from a clone.
"""

from absl import app

from artist_id import train

if __name__ == "__main__":
    app.run(train.main)
