"""Training library: models, the train-and-evaluate loop, and SavedModel export."""
