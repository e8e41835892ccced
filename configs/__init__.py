"""Named recipes: each module's RECIPE overrides some of the declared defaults, by flag name.

The defaults (`trainer/config.py` and the sections it gathers) are the
`default` recipe; a recipe module names only what differs from them.
"""

import importlib

from trainer import config as config_lib

RECIPES = ("default", "scratch", "original", "finetune")


def recipe_values(name: str) -> dict:
    """{flag name: value} that recipe `name` sets."""
    if name not in RECIPES:
        raise config_lib.ConfigError(f"--recipe={name}: choose one of {', '.join(RECIPES)}")
    return dict(importlib.import_module(f"configs.{name}").RECIPE)


def resolve(name: str, overrides: dict) -> config_lib.TrainConfig:
    """The declared defaults <- the recipe's values <- `overrides` (flags given)."""
    return config_lib.from_flat({**recipe_values(name), **overrides}, recipe=name)
