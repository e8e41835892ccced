"""Similar paintings: the training split's embeddings, kept in the SavedModel with thumbnails.

At export, each kept training painting's normalised embedding, artist, file
name and a small JPEG thumbnail become variables of the SavedModel (a
`GalleryModule`); the `similar` and `panel` signatures look up the nearest
ones by cosine similarity in TensorFlow, so any server of the SavedModel can
show similar paintings without the dataset. `--gallery_per_artist` bounds
the size: at most that many paintings of each artist, chosen by seed.

The gallery also says how familiar a painting looks (`Familiarity`): minus its
relative Mahalanobis distance (Ren et al. 2021) to the nearest artist, its
distance to that artist's mean embedding less its distance to the mean of all
the gallery's paintings, each measured in the spread of the gallery's embeddings.
A painting by an artist the model never saw is less like any training
painting than the classifier's probabilities show, so the "unknown artist"
rule (`trainer.calibration.fit_abstention`) tests it too; `benchmarks/open_set.py`
measures both, and the cosine similarity to the `FAMILIARITY_K`-th nearest
training painting (`nearest_similarity`, the familiarity of older exports).
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

import pipeline
from serving import explain

# Nearest paintings a `similar` answer lists.
SIMILAR_K = 8
# Largest side of a stored thumbnail, in pixels (JPEG quality: ops.THUMBNAIL_QUALITY).
THUMBNAIL_PX = 128
# The k of the report's k-nearest-neighbour vote (k = 1 is reported too).
VOTE_K = 5
# The k of `nearest_similarity`: the 1st would trust one look-alike.
FAMILIARITY_K = 5
# `Familiarity`'s covariances: this share of each is replaced by its mean variance, so
# that a gallery of fewer paintings than dimensions (100 an artist, 1280 dimensions)
# still gives an invertible one; half separated unseen artists best of the shares
# tried (docs/confidence.md), Ledoit-Wolf's far smaller one inverts the distance.
SHRINKAGE = 0.5


@dataclasses.dataclass(frozen=True)
class Gallery:
    """Row i: one training painting."""

    embeddings: np.ndarray  # float32 [n, D], rows of unit length.
    labels: np.ndarray  # int32 [n]
    file_names: np.ndarray  # object (bytes) [n]
    thumbnails: np.ndarray  # object (JPEG bytes) [n]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """Bytes the gallery adds to the SavedModel (before checkpoint overhead)."""
        return int(self.embeddings.nbytes + self.labels.nbytes + self.measure.nbytes
                   + sum(map(len, self.file_names)) + sum(map(len, self.thumbnails)))

    @functools.cached_property
    def measure(self) -> "Familiarity":
        return Familiarity.fit(self.embeddings, self.labels)

    def familiarity(self, embeddings: np.ndarray) -> np.ndarray:
        """Each embedding's familiarity [n] (`Familiarity`), as the SavedModel serves it."""
        return self.measure(embeddings)


@dataclasses.dataclass(frozen=True)
class Familiarity:
    """How much an embedding looks like the gallery's artists: minus the relative
    Mahalanobis distance to the nearest artist, min over artists c of
    d(x, mean_c; within-artist covariance) - d(x, mean; covariance of all), with d the
    squared Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance
    for improving near-OOD detection"). Subtracting the distance to the whole gallery
    discounts what makes a painting far from every artist alike (an unusual size,
    palette or condition) and keeps what sets it apart from the nearest artist.

    Stored whitened: after subtracting `centre`, a distance is the squared Euclidean one
    after `whiten` (or `whiten_all`, where the mean of all rows is 0). Computed as
    |a|^2 - 2 a.b + |b|^2, so memory grows with paintings x artists, not x dimensions too.
    """

    centre: np.ndarray  # float32 [D]: the mean of all rows.
    whiten: np.ndarray  # float32 [D, D]: the within-artist covariance^(-1/2).
    artist_means: np.ndarray  # float32 [artists, D], centred and whitened.
    whiten_all: np.ndarray  # float32 [D, D]: the covariance^(-1/2) of all rows.

    @classmethod
    def fit(cls, embeddings: np.ndarray, labels: np.ndarray, *,
            shrinkage: float = SHRINKAGE) -> "Familiarity":
        """From rows [n, D] and their artists [n] (artists without rows are left out)."""
        x = np.asarray(embeddings, np.float64)
        labels = np.asarray(labels)
        artists = np.unique(labels)
        centre = x.mean(axis=0)
        means = np.stack([x[labels == a].mean(axis=0) for a in artists]) - centre
        x = x - centre
        whiten = _inverse_sqrt_covariance(x - means[np.searchsorted(artists, labels)],
                                          shrinkage)
        return cls(centre=centre.astype(np.float32), whiten=whiten.astype(np.float32),
                   artist_means=(means @ whiten).astype(np.float32),
                   whiten_all=_inverse_sqrt_covariance(x, shrinkage).astype(np.float32))

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in dataclasses.astuple(self))

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        """Rows [n, D] -> familiarity [n] (higher: more like a gallery artist's paintings)."""
        x = np.asarray(embeddings, np.float64) - self.centre
        within = x @ self.whiten
        means = self.artist_means.astype(np.float64)
        to_artists = ((within ** 2).sum(axis=1, keepdims=True) - 2 * within @ means.T
                      + (means ** 2).sum(axis=1))
        to_all = ((x @ self.whiten_all) ** 2).sum(axis=1)
        return (to_all - to_artists.min(axis=1)).astype(np.float32)


def _inverse_sqrt_covariance(centred: np.ndarray, shrinkage: float) -> np.ndarray:
    """W [D, D] with W W^T the inverse of the rows' covariance, shrunk towards its mean
    variance by `shrinkage` (a floor keeps one row, or identical rows, invertible)."""
    covariance = centred.T @ centred / max(len(centred) - 1, 1)
    dims = covariance.shape[0]
    variance = max(np.trace(covariance) / dims, 1e-6)
    covariance = (1 - shrinkage) * covariance + shrinkage * variance * np.eye(dims)
    values, vectors = np.linalg.eigh(covariance)
    return vectors / np.sqrt(values)


def choose(labels: np.ndarray, per_artist: int, *, seed: int) -> np.ndarray:
    """Boolean mask of at most `per_artist` paintings per artist, chosen by `seed`."""
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), bool)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep[rng.permutation(rows)[:per_artist]] = True
    return keep


def embedding_fn(explainer):
    """float images [batch, S, S, 3] in [0, 1] (or views [batch, V, S, S, 3]) -> normalised
    embeddings, numpy (`explain.embed`)."""

    @tf.function
    def embed(images):
        return explain.embed(explainer, images)

    return lambda images: embed(images).numpy()


def build(explainer, builder, split: str, data: pipeline.DataConfig, *, per_artist: int,
          seed: int) -> Gallery:
    """Embeds the kept paintings of `split`, decoded as evaluation decodes them (their views'
    mean embedding with multi-crop inference, as the `embed` signature gives)."""
    keep = choose(pipeline.split_labels(builder, split), per_artist, seed=seed)
    embed = embedding_fn(explainer)
    columns = {"embeddings": [], "labels": [], "file_names": [], "thumbnails": []}
    for batch in pipeline.gallery_split(builder, split, data, keep=keep,
                                        thumbnail_px=THUMBNAIL_PX).as_numpy_iterator():
        columns["embeddings"].append(embed(pipeline.ops.rescale(batch["image"])))
        columns["labels"].append(batch["label"].astype(np.int32))
        columns["file_names"].append(batch["file_name"])
        columns["thumbnails"].append(batch["thumbnail"])
    return Gallery(**{k: np.concatenate(v) for k, v in columns.items()})


def similar_count(gallery: Gallery, k: int = SIMILAR_K) -> int:
    """Paintings a `similar` answer lists: k, or the whole gallery when it is smaller."""
    return min(k, len(gallery))


def _rows(value, name: str, dtype=None) -> tf.Variable:
    """A variable of unknown length (its first dimension): enrolment adds and removes rows."""
    value = np.asarray(value, dtype=object if dtype == tf.string else None)
    return tf.Variable(list(value) if dtype == tf.string else value, dtype=dtype,
                       trainable=False, name=name,
                       shape=tf.TensorShape([None, *value.shape[1:]]))


class GalleryModule(tf.Module):
    """The gallery as SavedModel variables, and the nearest-neighbour lookup over them."""

    def __init__(self, gallery: Gallery, artists: tf.Tensor, *, k: int = SIMILAR_K):
        super().__init__(name="gallery")
        self.k = similar_count(gallery, k)
        self.artists = artists
        self.embeddings = _rows(gallery.embeddings.astype(np.float32), "embeddings")
        self.labels = _rows(gallery.labels.astype(np.int32), "labels")
        self.file_names = _rows(gallery.file_names, "file_names", tf.string)
        self.thumbnails = _rows(gallery.thumbnails, "thumbnails", tf.string)
        self.measure = {}
        for field in dataclasses.fields(Familiarity):
            value = getattr(gallery.measure, field.name)
            # One row an artist: the artists' means; the rest are [D] and [D, D].
            self.measure[field.name] = (_rows(value, field.name) if field.name == "artist_means"
                                        else tf.Variable(value, trainable=False, name=field.name))

    def state(self) -> dict[str, tf.Variable]:
        """Every variable, by the name of the `Gallery` field or `Familiarity` field it holds."""
        return {"embeddings": self.embeddings, "labels": self.labels,
                "file_names": self.file_names, "thumbnails": self.thumbnails,
                **{f"familiarity_{name}": variable for name, variable in self.measure.items()}}

    def nearest(self, embeddings: tf.Tensor) -> dict[str, tf.Tensor]:
        """Normalised embeddings [batch, D] -> the k most similar gallery paintings each."""
        similarity = tf.matmul(embeddings, self.embeddings, transpose_b=True)
        top = tf.math.top_k(similarity, k=self.k)
        artist_ids = tf.gather(self.labels, top.indices)
        return {
            "similar_ids": top.indices,
            "similar_artist_ids": artist_ids,
            "similar_artists": tf.gather(self.artists, artist_ids),
            "similar_file_names": tf.gather(self.file_names, top.indices),
            "similarities": top.values,
            # TensorFlow Serving's REST API sends outputs named *_bytes as base64.
            "similar_thumbnails_bytes": tf.gather(self.thumbnails, top.indices),
        }

    def familiarity(self, embeddings: tf.Tensor) -> tf.Tensor:
        """Normalised embeddings [batch, D] -> [batch], as `Familiarity` computes it."""
        m = self.measure
        x = embeddings - m["centre"]
        within = tf.matmul(x, m["whiten"])
        to_artists = (tf.reduce_sum(tf.square(within), axis=1, keepdims=True)
                      - 2 * tf.matmul(within, m["artist_means"], transpose_b=True)
                      + tf.reduce_sum(tf.square(m["artist_means"]), axis=1))
        to_all = tf.reduce_sum(tf.square(tf.matmul(x, m["whiten_all"])), axis=1)
        return to_all - tf.reduce_min(to_artists, axis=1)


def nearest_similarity(gallery_embeddings: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each normalised embedding [n, D] to its `FAMILIARITY_K`-th most
    similar row of `gallery_embeddings` [m, D] (the last one, when m is smaller): [n]."""
    similarity = np.asarray(embeddings, np.float32) @ np.asarray(gallery_embeddings).T
    k = min(FAMILIARITY_K, len(gallery_embeddings))
    return np.sort(similarity, axis=1)[:, -k]


def neighbour_metrics(gallery: Gallery, embeddings: np.ndarray, labels: np.ndarray) -> dict:
    """Nearest-neighbour artist accuracy of `embeddings` against the gallery: k = 1, and a
    vote of the `VOTE_K` nearest (ties go to the larger summed similarity)."""
    similarity = np.asarray(embeddings, np.float32) @ gallery.embeddings.T
    k = min(VOTE_K, len(gallery))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(labels), int(gallery.labels.max()) + 1))
    rows = np.arange(len(labels))[:, None]
    neighbour_labels = gallery.labels[nearest]
    np.add.at(votes, (rows, neighbour_labels), 1.0)
    np.add.at(votes, (rows, neighbour_labels), 1e-3 * similarity[rows, nearest])
    labels = np.asarray(labels)
    return {
        "gallery_size": len(gallery),
        "gallery_megabytes": round(gallery.nbytes / 2**20, 2),
        "nn1_accuracy": float((neighbour_labels[:, 0] == labels).mean()),
        f"nn{k}_vote_accuracy": float((votes.argmax(axis=1) == labels).mean()),
    }
