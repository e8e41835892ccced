"""Fine-tuning an ImageNet network, for users with internet (the weights download once).

EfficientNetV2-B0 with ImageNet weights at its own 224 px: the new head
trains first with the backbone frozen (3 epochs), then the whole network at a
tenth of the rate; class weights even out artists with few paintings. Its
accuracy is not measured here: these machines download nothing. With
`--weights=PATH` (a file saved from the same backbone) it runs offline.
"""

RECIPE = dict(
    model="backbone",
    backbone="efficientnetv2b0",
    weights="imagenet",
    image_size=224,
    epochs=12,
    freeze_epochs=3,
    warmup_epochs=1,
    learning_rate=1e-3,
    fine_tune_learning_rate_factor=0.1,
    balance="class_weight",
)
