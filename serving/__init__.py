"""Serving: the SavedModel's signatures, request checks and export. Imports the
pipeline's preprocessing and a trained Keras model, never the training loop."""
