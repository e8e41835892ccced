"""The "unknown artist" rule as one expression, for NumPy arrays, TensorFlow tensors and
Python numbers alike: the SavedModel's `unknown` (`serving.export.Answer`), the rule's
fit and the reports (`trainer.calibration`), and `predict.py`'s per-file overrides all
call it, so they cannot drift apart."""


def is_unknown(top_probability, *, min_confidence, familiarity=None, min_familiarity=None):
    """True where the top (calibrated) probability is below `min_confidence` or, when the
    rule has a distance test (`min_familiarity` not None), the painting's `familiarity`
    (`serving.gallery.Familiarity`) is below `min_familiarity`."""
    unknown = top_probability < min_confidence
    if min_familiarity is not None:
        unknown = unknown | (familiarity < min_familiarity)
    return unknown
