"""Serving: the SavedModel's signatures, request checks and export, and the parts of a server
for it (batcher, REST codec, pages). Imports the pipeline's preprocessing and a trained Keras
model, never the training loop."""
