"""`artist-id COMMAND [flags]`: one console command for every entry point.

Each command is the same absl `main` as the script of its name at the
repository's top (`artist-id train` is `python train.py`); `--help` after a
command lists its flags. Only the named command's module is imported, so its
flags are the only ones defined.
"""

import importlib
import os
import sys

from absl import app, flags

PROG = "artist-id"
# command -> (module, flags put before the user's, what it does).
COMMANDS = {
    "train": ("artist_id.train", (), "train a model on a TFDS dataset into a work directory"),
    "evaluate": ("artist_id.evaluate", (), "evaluate an exported model on a dataset split"),
    "predict": ("artist_id.predict", (), "name the artist of image files with a SavedModel"),
    "serve": ("artist_id.serve", (), "the web app and TensorFlow Serving's REST API"),
    "enroll": ("artist_id.enroll", (), "add an artist to a SavedModel from a few paintings, "
               "or take one out"),
    "info": ("artist_id.predict", ("--info",), "what a SavedModel knows about itself"),
    "samples": ("artist_id.samples", (), "write a few paintings of a split to a folder"),
    "preview": ("artist_id.preview", (), "a contact sheet of the training augmentation"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} COMMAND [flags]   ({PROG} COMMAND --help lists its flags)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def run_command(module, argv: list[str] | None = None) -> None:
    """`app.run(module.main)`, with `--help` showing the command's docstring and flags
    (absl shows those of `__main__`: a script or console wrapper over the command)."""
    main = sys.modules["__main__"]
    main.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's start-up notes: off.
    app.run(module.main, argv=argv)


def run(argv: list[str] | None = None) -> None:
    """The console script's entry point."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    name = argv[1]
    if name not in COMMANDS:
        sys.exit(f"{PROG}: unknown command {name!r}\n\n{usage()}")
    module_name, preset, _ = COMMANDS[name]
    run_command(importlib.import_module(module_name),
                argv=[f"{PROG} {name}", *preset, *argv[2:]])


if __name__ == "__main__":
    run()
