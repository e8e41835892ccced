"""Adds an artist to an exported model, or takes one out: `python enroll.py --help` (the same
as `artist-id enroll`).

The command itself is `artist_id/enroll.py`; this file runs it from a clone.
"""

from artist_id import cli, enroll

if __name__ == "__main__":
    cli.run_command(enroll)
