"""artist-id's commands and recipes: `artist-id train|evaluate|predict|serve|info|...`.

The library stages live beside this package (`artist_tfds`, `pipeline`,
`trainer`, `serving`); each command here is a thin absl `main` over them, and
`train.py`, `predict.py`, ... at the repository's top run the same mains.
"""
