"""The original notebook's recipe, exactly: `artist-id train --recipe=original --workdir=DIR`.

seed_cnn (Conv16/32/64 with max pooling, dropout 0.2, dense 128, logits out)
at 300 px, batch 32, 20 epochs, RMSprop; augmentation with horizontal and
vertical flips, rotation, zoom 0.2, translation (0.3, 0.2) and contrast 0.2
(the notebook's five Keras layers, here one fused warp). The baseline every
other recipe is measured against (docs/recipes.md).
"""

RECIPE = dict(
    model="seed_cnn",
    weights="none",
    head="dense",
    freeze_epochs=0,
    balance="none",
    image_size=300,
    eval_scale=0.0,  # seed_cnn's Flatten ties it to one input size.
    epochs=20,
    optimizer="rmsprop",
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
