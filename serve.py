"""The web app and TensorFlow Serving REST API on a SavedModel: `python serve.py --help` (the same as `artist-id serve`).

The command itself is `artist_id/serve.py`; this file runs it from a clone.
"""

from artist_id import cli, serve

if __name__ == "__main__":
    cli.run_command(serve)
