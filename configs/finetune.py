"""The default recipe, under the name it had while it was not yet the default.

Fine-tuning EfficientNet-Lite0 from its ImageNet weights: see `default`.
Runs, scripts and notes that say `--recipe=finetune` get exactly the default.
"""

from configs.default import RECIPE  # noqa: F401  The same values.
