"""The original recipe, exactly: seed_cnn, 300 px, batch 32, 20 epochs, RMSprop.

Augmentation: horizontal and vertical flips, rotation, zoom 0.2,
translation (0.3, 0.2), contrast 0.2 (the notebook's five Keras layers).
"""

RECIPE = dict(
    model="seed_cnn",
    weights="none",
    freeze_epochs=0,
    balance="none",
    image_size=300,
    epochs=20,
    optimizer="rmsprop",
    learning_rate=1e-3,
    momentum=0.1,
    weight_decay=0.0,
    schedule="constant",
    warmup_epochs=0,
    label_smoothing=0.0,
    flip_vertical=True,
    rotation=0.25,
    translate_height=0.3,
    translate_width=0.2,
)
