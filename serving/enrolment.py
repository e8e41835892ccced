"""Adding an artist to an exported model from a few paintings, or taking one out, without
retraining: `artist-id enroll` (`artist_id/enroll.py`) and the web app's "add as a new artist".

An artist of a model with a cosine head is one direction among the head's rows
(`serving.head`). A new artist's direction is the mean of its paintings'
embeddings, made by the model's own `embed` signature (the same views as every
answer), less the mean of the gallery's: weight imprinting (Qi et al. 2018,
"Low-shot learning with imprinted weights"), centred as a trained head's
directions are (they point from the mean of all paintings towards their
artist's; an uncentred mean points near every painting and takes the known
artists' answers, docs/confidence.md). Its paintings also join the gallery (`similar`, with
thumbnails), the familiarity statistics are fitted again over the whole
gallery, and the metadata names the artist. The temperature and the "unknown
artist" thresholds stay as they were fitted on the trained artists'
validation split; the metadata's "enrolled" says so.

Everything changed is the state `serving.export.ServingModule.state()` saved
as named variables: the SavedModel is loaded, those variables are given new
rows and the loaded object is saved again, graph untouched. The new version
is written whole before it is renamed into place (`serving.versions`).
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from pipeline import ops
from serving import errors, export, versions
from serving import gallery as gallery_lib

# Readable paintings an artist needs: its direction is their mean.
MIN_PAINTINGS = 3
# The SavedModel state enrolment reads and writes (`ServingModule.state`).
FAMILIARITY = [f"gallery_familiarity_{field.name}"
               for field in dataclasses.fields(gallery_lib.Familiarity)]
GALLERY = ["gallery_embeddings", "gallery_labels", "gallery_file_names", "gallery_thumbnails"]


class EnrolmentError(ValueError):
    """A model or a request enrolment cannot serve; one line says why and what to do."""


@dataclasses.dataclass
class Served:
    """A loaded SavedModel, the state variables enrolment changes, and its metadata."""

    model_dir: str
    loaded: object
    state: dict[str, tf.Variable]
    document: dict

    @property
    def artists(self) -> list[str]:
        return [name.decode("utf-8") for name in self.state["artists"].numpy()]


def load(model_dir: str) -> Served:
    """The SavedModel at `model_dir` (or a model base's highest version), checked to be one
    enrolment can change."""
    model_dir = versions.resolve(model_dir)
    loaded = tf.saved_model.load(model_dir)
    names = ["artists", "document", "head_directions", *GALLERY, *FAMILIARITY]
    state = {name: getattr(loaded, export.STATE_PREFIX + name)[0] for name in names
             if hasattr(loaded, export.STATE_PREFIX + name)}
    if "artists" not in state:
        raise EnrolmentError(f"{model_dir} was exported by an earlier version, whose artists "
                             "are fixed in its graph: export it again with this version")
    if "head_directions" not in state:
        raise EnrolmentError(f"{model_dir} has a dense classifier: enrolment adds a direction "
                             "to a cosine head (train with --head=cosine, the default)")
    if "gallery_embeddings" not in state:
        raise EnrolmentError(f"{model_dir} was exported without a gallery "
                             "(--gallery_per_artist=0): enrolment adds the artist's paintings "
                             "to it; export with a gallery")
    return Served(model_dir, loaded, state, json.loads(state["document"].numpy()))


def embed(served: Served, images: list[bytes]) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """The `embed` signature over `images`: (embeddings of the readable ones, their indices,
    {index: why not} for the others)."""
    signature = served.loaded.signatures["embed"]
    rows, kept, refused = [], [], {}
    for i, image in enumerate(images):
        try:
            rows.append(signature(images=tf.constant([image]))["embeddings"].numpy()[0])
            kept.append(i)
        except tf.errors.InvalidArgumentError as e:
            refused[i] = errors.without_index(errors.error_message(e))
    return np.array(rows, np.float32).reshape(-1, served.state["head_directions"].shape[1]), \
        kept, refused


def imprint(embeddings: np.ndarray, served: Served) -> np.ndarray:
    """The new artist's direction: from the mean of the gallery's paintings to theirs."""
    direction = embeddings.mean(axis=0) - served.state["gallery_embeddings"].numpy().mean(axis=0)
    return direction / np.linalg.norm(direction)


def gallery_cap(served: Served) -> int:
    """Paintings an artist keeps in the gallery: the run's setting, else the most any has."""
    config = (served.document.get("config") or {}).get("export") or {}
    labels = served.state["gallery_labels"].numpy()
    return int(config.get("gallery_per_artist") or np.bincount(labels).max())


def enroll(served: Served, *, artist: str, images: list[bytes], file_names: list[str],
           metadata: dict | None = None) -> dict:
    """Adds `artist` to `served` in memory, from the readable ones of `images`; returns what
    was done ({"artist", "id", "paintings", "gallery_paintings", "refused": {file: why}})."""
    artist = artist.strip()
    if not artist:
        raise EnrolmentError("the artist needs a name")
    if artist in served.artists:
        raise EnrolmentError(f"{artist!r} is already one of the model's "
                             f"{len(served.artists)} artists (--remove it first to replace it)")
    embeddings, kept, refused = embed(served, images)
    refused = {file_names[i]: why for i, why in refused.items()}
    if len(kept) < MIN_PAINTINGS:
        raise EnrolmentError(f"{len(kept)} readable paintings of {artist!r}, at least "
                             f"{MIN_PAINTINGS} needed" + (
                                 f" ({len(refused)} refused: " + "; ".join(
                                     f"{name}: {why}" for name, why in refused.items()) + ")"
                                 if refused else ""))
    new_id = len(served.artists)
    _append(served.state["head_directions"], imprint(embeddings, served))
    _append(served.state["artists"], np.array([artist.encode("utf-8")], object))
    shown = kept[:gallery_cap(served)]
    _append(served.state["gallery_embeddings"], embeddings[:len(shown)])
    _append(served.state["gallery_labels"], np.full(len(shown), new_id, np.int32))
    _append(served.state["gallery_file_names"],
            np.array([os.path.basename(file_names[i]).encode("utf-8") for i in shown], object))
    _append(served.state["gallery_thumbnails"], np.array([ops.thumbnail_jpeg(
        tf.constant(images[i]), gallery_lib.THUMBNAIL_PX).numpy() for i in shown], object))
    gallery = _refit_familiarity(served)
    document = served.document
    document["artists"].append({"id": new_id, **(metadata or {}), "name": artist})
    document.setdefault("enrolled", []).append(
        {"artist": artist, "paintings": len(kept), "gallery_paintings": len(shown),
         "note": "added without retraining: direction = the mean of its paintings' "
                 "embeddings; temperature and 'unknown' thresholds as fitted before"})
    _update_document(served, gallery)
    return {"artist": artist, "id": new_id, "paintings": len(kept),
            "gallery_paintings": len(shown), "refused": refused}


def remove(served: Served, *, artist: str) -> dict:
    """Takes `artist` out of `served` in memory (a trained or an enrolled one)."""
    names = served.artists
    if artist not in names:
        raise EnrolmentError(f"{artist!r} is not one of the model's artists "
                             f"({', '.join(names)})")
    top_k = served.document.get("top_k") or 1
    if len(names) - 1 < max(2, top_k):
        raise EnrolmentError(f"{len(names)} artists: the model answers its top {top_k}, so it "
                             f"keeps at least {max(2, top_k)}")
    index = names.index(artist)
    for name in ("artists", "head_directions"):
        _assign(served.state[name], np.delete(served.state[name].numpy(), index, axis=0))
    labels = served.state["gallery_labels"].numpy()
    keep = labels != index
    for name in GALLERY:
        _assign(served.state[name], served.state[name].numpy()[keep])
    _assign(served.state["gallery_labels"], np.where(labels[keep] > index, labels[keep] - 1,
                                                     labels[keep]).astype(np.int32))
    gallery = _refit_familiarity(served)
    document = served.document
    document["artists"] = [{**entry, "id": i} for i, entry in enumerate(
        entry for entry in document["artists"] if entry["name"] != artist)]
    document["enrolled"] = [entry for entry in document.get("enrolled", [])
                            if entry["artist"] != artist]
    if not document["enrolled"]:
        del document["enrolled"]
    _update_document(served, gallery)
    return {"artist": artist, "id": index, "gallery_paintings": int((~keep).sum())}


def write(served: Served, target: str) -> str:
    """Saves `served` as a new SavedModel at `target`, whole or not at all."""
    for leftover in versions.stale_partials(os.path.dirname(os.path.abspath(target))):
        shutil.rmtree(leftover, ignore_errors=True)  # Killed writes' remains.
    partial = versions.partial_dir(os.path.abspath(target))
    try:
        tf.saved_model.save(served.loaded, partial, signatures=dict(served.loaded.signatures))
        export.write_assets(partial, artist_names=served.artists, document=served.document)
        versions.publish(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _append(variable: tf.Variable, rows: np.ndarray) -> None:
    rows = np.asarray(rows)
    _assign(variable, np.concatenate([variable.numpy(), rows.reshape(-1, *variable.shape[1:])]))


def _assign(variable: tf.Variable, value: np.ndarray) -> None:
    variable.assign(tf.constant(value, dtype=variable.dtype))


def _refit_familiarity(served: Served) -> gallery_lib.Gallery:
    """The gallery as it now is, its familiarity statistics fitted as the export fits them."""
    gallery = gallery_lib.Gallery(**{name.removeprefix("gallery_"): served.state[name].numpy()
                                     for name in GALLERY})
    for field in dataclasses.fields(gallery_lib.Familiarity):
        _assign(served.state[f"gallery_familiarity_{field.name}"],
                getattr(gallery.measure, field.name))
    return gallery


def _update_document(served: Served, gallery: gallery_lib.Gallery) -> None:
    document = served.document
    if document.get("gallery"):
        document["gallery"].update(paintings=len(gallery),
                                   megabytes=round(gallery.nbytes / 2**20, 2))
    _assign(served.state["document"], np.array(json.dumps(document, ensure_ascii=False),
                                               object))
