"""How a setting is declared: once, with its type, default, bounds or choices and help.

Every config section of the project is a frozen dataclass whose fields come
from `setting`, declared by the module that owns the choice (the pipeline's
`DataConfig` and `AugmentConfig`, the trainer's model, optimizer and run
sections). Command-line flags, `--help` and range checks are derived from
these declarations (`trainer/config.py`); nothing restates them. It lives at
the bottom of the import graph so every layer can declare its own section.
"""

import dataclasses
import types
from collections.abc import Sequence


class ConfigError(ValueError):
    """A value or combination of values that cannot work; one line says which."""


def setting(default, help: str, *, choices: Sequence[str] | None = None,
            bounds: tuple[float | None, float | None] | None = None, flag: str | None = None,
            after_training: bool = False):
    """A dataclass field that knows its help text, its allowed values and its flag name.

    `bounds` are inclusive (None: open); `flag` defaults to the field's name.
    `after_training`: the setting shapes only how a trained model is evaluated and
    exported, not its weights (a finished run given another value is re-evaluated
    and re-exported, not retrained).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "bounds": bounds, "flag": flag, "after_training": after_training}
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or field.name


def is_optional(field: dataclasses.Field) -> bool:
    """Whether the field's type is `X | None` (the setting may be unset)."""
    return isinstance(field.type, types.UnionType)


def value_type(field: dataclasses.Field) -> type:
    """bool, int, float or str: the field's type without `| None`."""
    if is_optional(field):
        return next(t for t in field.type.__args__ if t is not type(None))
    return field.type


def check(section) -> None:
    """Raises ConfigError, naming the flag, if a field is outside its choices or bounds."""
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        name = flag_name(field)
        choices, bounds = field.metadata.get("choices"), field.metadata.get("bounds")
        if choices and value not in choices:
            raise ConfigError(f"--{name}={value}: choose one of {', '.join(choices)}")
        if bounds and value is not None:
            low, high = bounds
            if (low is not None and value < low) or (high is not None and value > high):
                raise ConfigError(f"--{name}={value} is out of range "
                                  f"[{'-inf' if low is None else low}, "
                                  f"{'inf' if high is None else high}]")


class Section:
    """Base of every config section: checks its fields' choices and bounds on creation.

    A section with checks across its own fields extends `__post_init__`,
    calling `super().__post_init__()` first.
    """

    def __post_init__(self):
        check(self)


def check_that(condition: bool, message: str) -> None:
    """For checks across settings: ConfigError(message) unless `condition`."""
    if not condition:
        raise ConfigError(message)
