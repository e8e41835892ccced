"""The project's recipe: a small residual net, smaller images, AdamW with cosine decay.

Chosen to beat the original recipe within the original's CPU time on real
paintings: 160 px inputs cost a third of 300 px per image, so the same
budget buys more epochs of a network that generalises instead of memorising.
Augmentation keeps what paintings allow (a mirrored painting is still by its
painter) and drops what destroys composition (upside-down skies, 90 degree turns).
"""

RECIPE = dict(
    model="resnet_small",
    image_size=160,
    resize_mode="stretch",
    batch_size=32,
    epochs=30,
    optimizer="adamw",
    learning_rate=2e-3,
    momentum=0.0,
    weight_decay=0.05,
    schedule="cosine",
    warmup_epochs=2,
    label_smoothing=0.1,
    dropout=0.2,
    augment=True,
    flip_horizontal=True,
    flip_vertical=False,
    rotation=0.03,
    zoom=0.2,
    translate_height=0.1,
    translate_width=0.1,
    contrast=0.2,
)
