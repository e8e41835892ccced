"""A small residual net trained from scratch: the project's default until ImageNet weights
came installed, and the recipe for networks that have none.

`resnet_small` at 160 px, AdamW with cosine decay, warm-up and label
smoothing, batch-norm averages matched to the collection's steps per epoch,
augmentation that keeps a painting's composition. Chosen to beat the
original recipe within the original's CPU time on real paintings: 160 px
inputs cost a third of 300 px per image, so the same budget buys more epochs
of a network that generalises instead of memorising (README, "How the
recipes were chosen"). A training step costs a fifth of the default's, and
`--weights=PATH` starts it from another collection's run (transfer). One size at
inference (the declared default): multi-scale (`--eval_scale`) was measured on the
default recipe only.
"""

RECIPE = dict(
    model="resnet_small",
    weights="none",
    epochs=30,
    freeze_epochs=0,
    learning_rate=2e-3,
    warmup_epochs=2,
    balance="none",
)
