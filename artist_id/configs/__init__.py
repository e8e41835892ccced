"""Named recipes: the declared defaults (`default`), and modules whose RECIPE overrides some.

The defaults are declared once, beside the code that owns each setting, and
gathered by `trainer/config.py`: they are the `default` recipe, with no module
of its own. Each other recipe names only what differs from them; what each
was measured to do is in docs/recipes.md.
"""

import importlib

from trainer import config as config_lib

RECIPES = ("default", "scratch", "original")
# Earlier runs and scripts name the default recipe by the name it had before it was one.
ALIASES = {"finetune": "default"}


def recipe_values(name: str) -> dict:
    """{flag name: value} that recipe `name` sets (nothing, for `default`)."""
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise config_lib.ConfigError(f"--recipe={name}: choose one of {', '.join(RECIPES)}")
    if name == "default":
        return {}
    return dict(importlib.import_module(f"{__name__}.{name}").RECIPE)


def resolve(name: str, overrides: dict) -> config_lib.TrainConfig:
    """The declared defaults <- the recipe's values <- `overrides` (flags given)."""
    return config_lib.from_flat({**recipe_values(name), **overrides},
                                recipe=ALIASES.get(name, name))
