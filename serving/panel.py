"""The HTML panel of one painting: the answer, why, similar paintings and the artist.

Shared by `predict.py --html` (a static page) and `serve.py` (the upload page),
so both show the same thing. Input: one image's row of the SavedModel's `panel`
signature (`serving/export.py`); a model exported before that signature
existed gives `serving_default`'s outputs only, and the panel shows what it has.
Needs numpy and Pillow, not TensorFlow.
"""

import base64
import html
import io

import numpy as np
from PIL import Image, ImageOps

# Longer side of the painting and its heatmap on the page, in pixels.
DISPLAY_PX = 320
SIMILAR_SHOWN = 4
# Artist metadata shown on the card, in this order, when the model carries it.
CARD_FIELDS = ("years", "nationality", "genre")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; }
.panel { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 1em;
         margin: 0 0 1.2em 0; display: flex; flex-wrap: wrap; gap: 1.2em; }
.panel h2 { width: 100%; margin: 0; font-size: 1em; word-break: break-all; }
.panel figure { margin: 0; }
.panel figure img { max-width: 320px; max-height: 320px; display: block; }
.panel figcaption { font-size: 0.8em; color: #555; }
.answer { min-width: 260px; flex: 1; }
.bar { display: flex; align-items: center; gap: 0.5em; margin: 0.25em 0; font-size: 0.9em; }
.bar .name { width: 11em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar .track { display: block; flex: 1; background: #eee; height: 0.9em; border-radius: 3px; }
.bar .fill { display: block; background: #3b6fb6; height: 100%; border-radius: 3px; }
.bar .value { width: 3.5em; text-align: right; }
.unknown { color: #a33; font-weight: bold; }
.claim { margin-bottom: 0.4em; font-weight: bold; color: #345; }
.card { background: #f3f6fb; border-radius: 6px; padding: 0.6em 0.8em; margin-top: 0.8em;
        font-size: 0.9em; }
.card h3 { margin: 0 0 0.3em 0; font-size: 1em; }
.similar-block > div:first-child { margin: 0.8em 0 0.3em 0; font-size: 0.9em; color: #555; }
.similar { display: flex; gap: 0.6em; flex-wrap: wrap; }
.similar figure img { width: 110px; height: 110px; object-fit: cover; border-radius: 4px; }
.similar figcaption { width: 110px; }
.error { background: #fff4f4; border-color: #e4b4b4; }
.error p { margin: 0; }
"""


def data_uri(image: Image.Image | bytes, *, mime: str = "image/jpeg") -> str:
    """A Pillow image (as JPEG) or already encoded bytes -> a data: URI."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=85)
        image = buffer.getvalue()
    return f"data:{mime};base64," + base64.b64encode(image).decode("ascii")


def open_image(encoded: bytes, max_px: int = DISPLAY_PX) -> Image.Image | None:
    """Encoded bytes -> an RGB image at most `max_px` on its longer side, or None."""
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.draft("RGB", (max_px, max_px))  # Cheap JPEG downscale.
            image = ImageOps.exif_transpose(image).convert("RGB")
    except Exception:  # noqa: BLE001  Pillow may not read what TensorFlow does: no picture.
        return None
    image.thumbnail((max_px, max_px))
    return image


def jet(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB in [0, 1] on the usual blue-cyan-yellow-red ramp."""
    return np.clip(1.5 - np.abs(4 * values[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)


def heatmap_overlay(image: Image.Image, heatmap: np.ndarray, *, resize_mode: str) -> Image.Image:
    """The painting under its Grad-CAM map: warm where the model looked, clear where not.

    The map covers what the model saw: the whole painting (stretch), or its
    centred square (crop), which is then what is shown.
    """
    if resize_mode == "crop":
        side = min(image.size)
        image = ImageOps.fit(image, (side, side))
    grid = Image.fromarray(np.asarray(heatmap, np.float32), mode="F")
    heat = np.clip(np.asarray(grid.resize(image.size, Image.Resampling.BILINEAR)), 0, 1)
    alpha = (0.15 + 0.5 * heat)[..., None]
    pixels = np.asarray(image, np.float32) / 255
    blended = (1 - alpha) * pixels + alpha * jet(heat)
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bars(outputs: dict, top_k: int) -> str:
    rows = []
    for artist, probability in zip(outputs["top_k_artists"][:top_k],
                                   outputs["top_k_probabilities"][:top_k]):
        name = html.escape(_text(artist))
        rows.append(f'<div class="bar"><span class="name" title="{name}">{name}</span>'
                    f'<span class="track"><span class="fill" style="width:{probability:.1%}">'
                    f'</span></span><span class="value">{probability:.1%}</span></div>')
    return "".join(rows)


def artist_card(artist: dict) -> str:
    """Name, years, nationality, genre and a Wikipedia link, as far as the model knows them."""
    lines = [f"<h3>{html.escape(artist.get('name', ''))}</h3>"]
    lines += [f"<div>{field}: {html.escape(str(artist[field]))}</div>"
              for field in CARD_FIELDS if artist.get(field)]
    if artist.get("wikipedia"):
        url = html.escape(artist["wikipedia"], quote=True)
        lines.append(f'<div><a href="{url}" target="_blank" rel="noopener">Wikipedia</a></div>')
    return f'<div class="card">{"".join(lines)}</div>'


def _similar(outputs: dict) -> str:
    if "similar_thumbnails_bytes" not in outputs:
        return ""
    figures = []
    for thumbnail, artist, file_name, similarity in list(zip(
            outputs["similar_thumbnails_bytes"], outputs["similar_artists"],
            outputs["similar_file_names"], outputs["similarities"]))[:SIMILAR_SHOWN]:
        figures.append(
            f'<figure><img src="{data_uri(thumbnail)}" alt="{html.escape(_text(file_name))}">'
            f"<figcaption>{html.escape(_text(artist))} ({similarity:.2f})</figcaption></figure>")
    return ('<div class="similar-block"><div>Similar training paintings</div>'
            f'<div class="similar">{"".join(figures)}</div></div>')


def panel_html(name: str, encoded: bytes, outputs: dict, document: dict, *, top_k: int = 5
               ) -> str:
    """One painting's panel; `outputs` is its row of the `panel` (or `serving_default`)
    signature, `document` the model's metadata (artists, resize_mode)."""
    image = open_image(encoded)
    figures = []
    if image is not None:
        figures.append(f'<figure><img class="painting" src="{data_uri(image)}" alt="painting">'
                       "<figcaption>painting</figcaption></figure>")
        if "heatmaps" in outputs:
            overlay = heatmap_overlay(image, outputs["heatmaps"],
                                      resize_mode=document.get("resize_mode", "stretch"))
            figures.append(f'<figure><img class="heatmap" src="{data_uri(overlay)}" '
                           'alt="heatmap"><figcaption>where the model looked (Grad-CAM)'
                           "</figcaption></figure>")
    artists = document.get("artists", [])
    top_id = int(outputs["top_k_ids"][0])
    card = artist_card(artists[top_id]) if 0 <= top_id < len(artists) else ""
    verdict = ""
    if outputs.get("unknown", False):
        closest = html.escape(_text(outputs["top_k_artists"][0]))
        verdict = (f'<div class="unknown">unknown artist (closest: {closest}, '
                   f'{outputs["top_k_probabilities"][0]:.1%})</div>')
    return (f'<section class="panel"><h2>{html.escape(name)}</h2>{"".join(figures)}'
            f'<div class="answer">{claim_html(outputs, document)}{verdict}'
            f'{_bars(outputs, top_k)}{card}{_similar(outputs)}</div></section>')


def claim_html(outputs: dict, document: dict) -> str:
    """The `verify` answer for a painting said to be by `outputs["claimed_artist"]`, if any."""
    if "same_hand" not in outputs or "claimed_artist" not in outputs:
        return ""
    threshold = ((document.get("verification") or {}).get("claim") or {}).get("threshold")
    said = html.escape(_text(outputs["claimed_artist"]))
    verdict = "the same hand" if outputs["same_hand_accepted"] else "not the same hand"
    limit = f"; accepted from {threshold:.2f}" if threshold is not None else ""
    return (f'<div class="claim">Said to be by {said}: {verdict} (score '
            f'{float(outputs["same_hand"]):.2f}{limit})</div>')


def error_html(name: str, message: str) -> str:
    """The panel of a file the model refused."""
    return (f'<section class="panel error"><h2>{html.escape(name)}</h2>'
            f'<p class="message">{html.escape(message)}</p></section>')


def page_html(title: str, body: str, *, script: str = "") -> str:
    """A whole page around panels (and, for the upload page, its script)."""
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}'
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
            f"{body}\n{f'<script>{script}</script>' if script else ''}</body></html>\n")
