"""The original recipe, exactly: seed_cnn, 300 px, batch 32, 20 epochs, RMSprop."""

RECIPE = dict(
    model="seed_cnn",
    image_size=300,
    resize_mode="stretch",
    batch_size=32,
    epochs=20,
    optimizer="rmsprop",
    learning_rate=1e-3,
    momentum=0.1,
    schedule="constant",
    weight_decay=0.0,
    label_smoothing=0.0,
    # Horizontal and vertical flips, rotation, zoom 0.2, translation (0.3, 0.2), contrast 0.2.
    augment=True,
    flip_horizontal=True,
    flip_vertical=True,
    rotation=0.25,
    zoom=0.2,
    translate_height=0.3,
    translate_width=0.2,
    contrast=0.2,
)
