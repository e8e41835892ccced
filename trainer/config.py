"""TrainConfig: every setting of a run, in sections declared by the modules that own them.

Each setting is declared once, with `pipeline.settings.setting` (type,
default, bounds or choices, help): the pipeline's `DataConfig` and
`AugmentConfig`, `models.ModelConfig`, `optim.OptimizerConfig`,
`export.ExportConfig`, and the two sections below. The declared defaults are
the project's `default` recipe; `artist_id/configs/` holds the other recipes
as overrides of them. Command-line flags (one flat `--name` per setting),
`--help`, `--print_config` and range checks all derive from the declarations.
"""

import dataclasses
import typing

from absl import flags

from pipeline import augment as augment_lib
from pipeline import input_pipeline, settings
from pipeline.settings import ConfigError, setting  # noqa: F401  ConfigError: re-exported.
from serving import export as export_lib
from trainer import callbacks as callbacks_lib
from trainer import models, optim

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(settings.Section):
    """How long training runs, in phases, and when it stops early."""

    epochs: int = setting(30, "Passes over the training split (at most, with "
                          "--cpu_budget_seconds or --early_stopping_patience).", bounds=(1, None))
    freeze_epochs: int = setting(1, "Backbone: epochs training the head alone before "
                                 "unfreezing everything.", bounds=(0, None))
    fine_tune_learning_rate_factor: float = setting(
        0.3, "Backbone: learning rate multiplier once unfrozen.", bounds=(1e-6, 1.0))
    early_stopping_patience: int = setting(0, "Stop after this many epochs without a better "
                                           "--select_by score (0: never).", bounds=(0, None))
    select_by: str = setting(
        "val_loss", "Which epoch's weights the run keeps: lowest validation loss (default: a "
        "smooth score even on a 70-painting validation split), best validation accuracy (on "
        "a small split one painting is a point or two: it picks lucky epochs), or the last "
        "epoch.", choices=callbacks_lib.SELECTIONS)
    cpu_budget_seconds: float = setting(0.0, "Stop at an epoch end before training CPU time "
                                        "would exceed this many seconds (0: no limit).",
                                        bounds=(0.0, None))


@dataclasses.dataclass(frozen=True)
class RunConfig(settings.Section):
    """Where and how the computation runs; none of it changes what is learnt, but the seed."""

    precision: str = setting("float32", "float32, or mixed precision for accelerators.",
                             choices=PRECISIONS)
    jit_compile: bool = setting(False, "Compile the training step with XLA.")
    strategy: str = setting("default", "default (one device), mirrored (all local GPUs) or "
                            "multi_worker (every worker of the TF_CONFIG cluster runs the same "
                            "command; docs/scaling.md).", choices=STRATEGIES)
    sync_batch_norm: bool = setting(
        True, "multi_worker: batch-norm statistics over the global batch, so moving averages "
        "stay equal on every worker; false keeps them per worker (no collective per layer: "
        "faster, docs/scaling.md).")
    deterministic: bool = setting(False, "Deterministic ops and input order: the same flags and "
                                  "seed give the same run (slower).")
    seed: int = setting(0, "Seed for initialisation, shuffling and augmentation.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole run. `recipe` names the set of overrides it was made from."""

    recipe: str = "default"
    data: input_pipeline.DataConfig = dataclasses.field(default_factory=input_pipeline.DataConfig)
    augment: augment_lib.AugmentConfig = dataclasses.field(default_factory=augment_lib.AugmentConfig)
    model: models.ModelConfig = dataclasses.field(default_factory=models.ModelConfig)
    optimizer: optim.OptimizerConfig = dataclasses.field(default_factory=optim.OptimizerConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    export: export_lib.ExportConfig = dataclasses.field(default_factory=export_lib.ExportConfig)

    def __post_init__(self):
        """Checks across sections; each section checked its own fields already."""
        epochs = self.training.epochs
        settings.check_that(self.optimizer.warmup_epochs < epochs,
                            f"--warmup_epochs={self.optimizer.warmup_epochs} must be below "
                            f"--epochs={epochs}")
        freeze = self.training.freeze_epochs
        settings.check_that(freeze < epochs,
                            f"--freeze_epochs={freeze} must be below --epochs={epochs}")
        if self.model.name == "backbone":
            settings.check_that(self.data.image_size >= 32,
                                "--image_size must be >= 32 for a backbone")
            settings.check_that(freeze == 0 or self.model.weights != "none",
                                "--freeze_epochs with --weights=none would train a random, "
                                "frozen backbone")
        else:
            settings.check_that(freeze == 0, "--freeze_epochs needs --model=backbone "
                                "(--freeze_epochs=0, or --recipe=scratch, which sets it)")
        settings.check_that(not (self.data.eval_scale and self.model.name == "seed_cnn"),
                            f"--eval_scale={self.data.eval_scale} needs a network that runs at "
                            "any size; seed_cnn's Flatten ties it to --image_size: pass "
                            "--eval_scale=0")
        settings.check_that(not self.optimizer.margin or self.model.head == "cosine",
                            f"--margin={self.optimizer.margin} is a cosine margin: it needs "
                            "--head=cosine")
        settings.check_that(not (self.optimizer.margin and self.optimizer.logit_norm),
                            "--margin and --logit_norm are two different losses: pick one")
        settings.check_that(not (self.run.deterministic and self.data.tf_data_service),
                            "--deterministic cannot hold with --tf_data_service (workers race)")
        settings.check_that(not (self.run.strategy == "multi_worker" and self.data.tf_data_service),
                            "--strategy=multi_worker reads its input on the workers; it cannot "
                            "take --tf_data_service")
        settings.check_that(not (self.run.strategy == "multi_worker" and self.optimizer.ema_epochs),
                            "--ema_epochs is not supported with --strategy=multi_worker (its "
                            "loop would validate and save the raw weights)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **flat) -> "TrainConfig":
        """A copy with settings changed by flag name, e.g. `replace(epochs=3, seed=1)`."""
        return from_flat({**to_flat(self), **flat}, recipe=self.recipe)


def sections() -> dict[str, type]:
    """{section name: its dataclass}, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}


def setting_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """{flag name: (section, field)} for every setting."""
    return {settings.flag_name(field): (section, field)
            for section, kind in sections().items() for field in dataclasses.fields(kind)}


def to_flat(config: TrainConfig) -> dict:
    """{flag name: value} for every setting."""
    return {name: getattr(getattr(config, section), field.name)
            for name, (section, field) in setting_fields().items()}


def from_flat(values: dict, *, recipe: str = "default") -> TrainConfig:
    """A TrainConfig from {flag name: value}; unknown names are an error, missing ones default."""
    index = setting_fields()
    unknown = sorted(set(values) - set(index))
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    grouped: dict[str, dict] = {section: {} for section in sections()}
    for name, value in values.items():
        section, field = index[name]
        grouped[section][field.name] = value
    built = {section: kind(**grouped[section]) for section, kind in sections().items()}
    return TrainConfig(recipe=recipe, **built)


# What a config.json written before a setting existed meant by leaving it out: the
# behaviour of that version, where today's declared default differs from it. A
# default that changes adds its old value here, so old runs rebuild what they trained.
LEGACY_VALUES = {
    "head": "dense",  # Before the cosine head.
    "eval_scale": 0.0,  # Before multi-scale inference: one size.
    "bn_momentum": 0.99,  # Before batch-norm momentum was matched to steps per epoch.
    "select_by": "val_accuracy",  # Before checkpoints were selected by validation loss.
    "gallery_per_artist": 0,  # Before the similar-paintings gallery.
    "target_precision": 0.0,  # Before the "unknown artist" rule: every painting answered.
    "novelty_reject": 0.0,  # Before the rule's distance test.
}


def after_training_settings() -> frozenset[str]:
    """Flag names of the settings that shape only evaluation and export, not the weights."""
    return frozenset(name for name, (_, field) in setting_fields().items()
                     if field.metadata.get("after_training"))


def from_dict(document: dict) -> TrainConfig:
    """A TrainConfig from `config.json`: nested (sections) or flat (before sections).

    Settings since removed are skipped; settings the file predates take their
    `LEGACY_VALUES`, else the declared default.
    """
    recipe = document.get("recipe", "default")
    if any(isinstance(document.get(section), dict) for section in sections()):
        flat = {}
        for section, kind in sections().items():
            by_field = {f.name: settings.flag_name(f) for f in dataclasses.fields(kind)}
            flat.update({by_field[k]: v for k, v in document.get(section, {}).items()
                         if k in by_field})
    else:
        flat = {k: v for k, v in document.items() if k in setting_fields()}
    return from_flat({**LEGACY_VALUES, **flat}, recipe=recipe)


def describe(config: TrainConfig, *, marked: dict | None = None) -> str:
    """The whole resolved config, a section a block, one `name = value` a line; settings
    in `marked` (e.g. what the recipe sets) end with `# <recipe>`, flags given `# flag`."""
    marked = marked or {}
    flat, lines = to_flat(config), [f"# recipe: {config.recipe}"]
    for section, kind in sections().items():
        lines.append(f"[{section}]")
        for field in dataclasses.fields(kind):
            name = settings.flag_name(field)
            note = f"  # {marked[name]}" if name in marked else ""
            lines.append(f"{name} = {flat[name]!r}{note}")
    return "\n".join(lines)


def parse_assignments(assignments: list[str]) -> dict:
    """["image_size=64", "augment=false"] -> {"image_size": 64, "augment": False}, typed by
    each setting's declaration (for scripts that take settings as `name=value` lists)."""
    index, values = setting_fields(), {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        if name not in index:
            raise ConfigError(f"unknown setting {name!r} in {assignment!r}")
        field = index[name][1]
        kind = settings.value_type(field)
        if kind is bool:
            values[name] = text.lower() in ("1", "true", "yes")
        elif text in ("", "none", "None") and settings.is_optional(field):
            values[name] = None  # An optional setting unset; "none" is a value of the others.
        else:
            values[name] = kind(text)
    return values


# --- Flags ----------------------------------------------------------------------------


def define_flags(recipes: dict[str, dict], flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """One flag per setting, defaulting to None (= the recipe's value), help from the declaration.

    Bounds and choices are absl's to check at parse time; the help text says
    what each recipe sets.
    """
    defaults = to_flat(TrainConfig())
    for name, (section, field) in setting_fields().items():
        meta = field.metadata
        per_recipe = ", ".join(f"{recipe}={values.get(name, defaults[name])}"
                               for recipe, values in recipes.items())
        text = f"{meta['help']} [{section}; {per_recipe}]"
        kind = settings.value_type(field)
        options = dict(name=name, default=None, help=text, flag_values=flag_values)
        if meta.get("choices"):
            flags.DEFINE_enum(enum_values=list(meta["choices"]), **options)
        elif kind is bool:
            flags.DEFINE_bool(**options)
        elif kind in (int, float):
            low, high = meta.get("bounds") or (None, None)
            define = flags.DEFINE_integer if kind is int else flags.DEFINE_float
            define(lower_bound=low, upper_bound=high, **options)
        else:
            flags.DEFINE_string(**options)


def given_flags(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """{flag name: value} of the settings given on the command line."""
    return {name: flag_values[name].value for name in setting_fields()
            if flag_values[name].present}
