"""The web app and TensorFlow Serving REST API on a SavedModel: `python serve.py --help` (the same as `artist-id serve`).

The command itself is `artist_id/serve.py`; this file runs it from a clone.
"""

from absl import app, flags

from artist_id import serve

# --help lists the flags of the main module: this file's, which are the command's.
flags.adopt_module_key_flags(serve)

if __name__ == "__main__":
    app.run(serve.main)
