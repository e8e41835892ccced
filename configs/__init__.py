"""Named recipes: each module's RECIPE is a set of flag values over TrainConfig."""

import dataclasses
import importlib

from trainer import config as config_lib

RECIPES = ("default", "original")


def recipe_values(name: str) -> dict:
    if name not in RECIPES:
        raise config_lib.ConfigError(f"--recipe={name}: choose one of {', '.join(RECIPES)}")
    return dict(importlib.import_module(f"configs.{name}").RECIPE)


def resolve(name: str, overrides: dict) -> config_lib.TrainConfig:
    """TrainConfig defaults <- the recipe's values <- `overrides` (flags given)."""
    values = {**recipe_values(name), **overrides, "recipe": name}
    unknown = set(values) - {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    if unknown:
        raise config_lib.ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return config_lib.validate(config_lib.TrainConfig(**values))
