"""Mixup and CutMix: training batches blended with themselves, labels in proportion.

Each image is paired with the image at the mirrored position of its batch
(`tf.reverse`: no second read, as timm pairs them) and takes a share `lam`
of its own from Beta(alpha, alpha), drawn per image:

- **mixup** (Zhang et al. 2018) blends the pixels: `lam * x + (1 - lam) * x'`;
- **CutMix** (Yun et al. 2019) pastes a box of the partner covering `1 - lam`
  of the area (clipped at the border; `lam` then recomputed from the pixels
  actually kept).

The label becomes `lam * y + (1 - lam) * y'` (one-hot rows), so the label of
every pixel is exact: an image's mean over pixels of any per-class quantity is
the label-weighted mean (tested). With both on, each image takes one of the two
at even odds.
"""

import tensorflow as tf

Seed = tf.Tensor  # Shape [2]: a stateless RNG seed.


def _beta(seed: Seed, batch: tf.Tensor, alpha: float) -> tf.Tensor:
    """Beta(alpha, alpha) draws as X / (X + Y), X and Y Gamma(alpha)."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    x = tf.random.stateless_gamma([batch], seeds[0], alpha)
    y = tf.random.stateless_gamma([batch], seeds[1], alpha)
    return x / tf.maximum(x + y, 1e-12)


def _cut_masks(seed: Seed, lam: tf.Tensor, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[B, H, W, 1] masks, 1 inside each image's box of area ~(1 - lam)."""
    batch = tf.shape(lam)[0]
    side = tf.sqrt(1.0 - lam)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    centres = tf.random.stateless_uniform([batch, 2], seed) * tf.stack([h, w])
    half = tf.stack([h * side, w * side], axis=1) / 2.0
    low = tf.clip_by_value(tf.round(centres - half), 0.0, tf.stack([h, w]))
    high = tf.clip_by_value(tf.round(centres + half), 0.0, tf.stack([h, w]))
    rows = tf.range(h)[None, :]
    cols = tf.range(w)[None, :]
    inside_rows = (rows >= low[:, :1]) & (rows < high[:, :1])  # [B, H]
    inside_cols = (cols >= low[:, 1:]) & (cols < high[:, 1:])  # [B, W]
    mask = inside_rows[:, :, None] & inside_cols[:, None, :]
    return tf.cast(mask, tf.float32)[..., None]


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: Seed, *, mixup: float,
              cutmix: float) -> tuple[tf.Tensor, tf.Tensor]:
    """(images [B, H, W, C], one-hot labels [B, K]) blended; alphas of 0 switch one off."""
    if not (mixup or cutmix):
        return images, labels
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank != 2:
        raise ValueError("mixup and CutMix need one-hot labels [batch, classes]")
    shape = tf.shape(images)
    batch = shape[0]
    seeds = tf.random.experimental.stateless_split(seed, 4)
    partner_images = tf.reverse(images, axis=[0])
    partner_labels = tf.reverse(labels, axis=[0])
    if mixup:
        kept_share = _beta(seeds[1], batch, mixup)
        keep = tf.broadcast_to(kept_share[:, None, None, None],
                               tf.concat([shape[:3], [1]], 0))
    if cutmix:
        lam = _beta(seeds[2], batch, cutmix)
        cut_keep = 1.0 - _cut_masks(seeds[3], lam, shape[1], shape[2])
        # The share each image keeps, counted from the pixels themselves.
        cut_share = tf.reduce_mean(cut_keep, axis=[1, 2, 3])
        if mixup:  # Each image one of the two, at even odds.
            use_cut = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
            keep = tf.where(use_cut[:, None, None, None], cut_keep, keep)
            kept_share = tf.where(use_cut, cut_share, kept_share)
        else:
            keep, kept_share = cut_keep, cut_share
    keep = tf.cast(keep, images.dtype)
    mixed = keep * images + (1.0 - keep) * partner_images
    share = tf.cast(kept_share, labels.dtype)[:, None]
    return mixed, share * labels + (1.0 - share) * partner_labels
