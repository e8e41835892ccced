"""`python -m artist_id COMMAND`: the same as the `artist-id` console command."""

from artist_id import cli

cli.run()
