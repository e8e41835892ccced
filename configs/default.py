"""The project's recipe: the declared defaults, unchanged.

A small residual net (`resnet_small`) at 160 px, AdamW with cosine decay,
warm-up and label smoothing, batch-norm averages matched to the
collection's steps per epoch, augmentation that keeps a painting's
composition. Chosen to beat the original recipe within the original's CPU
time on real paintings: 160 px inputs cost a third of 300 px per image, so
the same budget buys more epochs of a network that generalises instead of
memorising (README, "How the default recipe was chosen").
"""

RECIPE = {}
