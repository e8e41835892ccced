"""A small residual net from scratch: `artist-id train --recipe=scratch --workdir=DIR`.

For networks without ImageNet weights, or to start from another collection's
run (`--weights=PATH`): `resnet_small` at 160 px with the default recipe's
optimizer and augmentation, a higher learning rate and longer warm-up, a
dense head and one size at inference. A training step costs about a fifth of
the default's; docs/recipes.md compares the two.
"""

RECIPE = dict(
    model="resnet_small",
    weights="none",
    head="dense",
    freeze_epochs=0,
    eval_scale=0.0,
    learning_rate=2e-3,
    warmup_epochs=2,
    balance="none",
)
