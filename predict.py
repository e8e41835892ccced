"""Names the artist of paintings with an exported SavedModel: `python predict.py --help` (the same as `artist-id predict`).

The command itself is `artist_id/predict.py`; this file runs it from a clone.
"""

from artist_id import cli, predict

if __name__ == "__main__":
    cli.run_command(predict)
