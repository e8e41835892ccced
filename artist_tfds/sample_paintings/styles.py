"""Procedural "paintings": one pure numpy + Pillow generator per fictional artist."""

import colorsys
from collections.abc import Callable
import dataclasses
import math

import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFilter

# Longest side and width / height ratio of a generated painting.
MIN_LONG_SIDE = 192
MAX_LONG_SIDE = 320
MIN_ASPECT = 0.6
MAX_ASPECT = 1.6
# Shape sizes are given for a 256 px canvas and scaled to the real one.
_REFERENCE_SIDE = 256.0
# Standard deviation of the canvas grain, in 0-255 pixel units.
_GRAIN = 4.0

Colour = tuple[int, int, int]
Painter = Callable[[np.random.Generator, int, int], Image.Image]


def random_size(rng: np.random.Generator) -> tuple[int, int]:
    """(width, height): longest side in [192, 320], aspect ratio in [0.6, 1.6]."""
    long_side = int(rng.integers(MIN_LONG_SIDE, MAX_LONG_SIDE + 1))
    aspect = rng.uniform(MIN_ASPECT, MAX_ASPECT)
    if aspect >= 1.0:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def _hsv(hue: float, saturation: float, value: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _random_palette(
    rng: np.random.Generator,
    size: int,
    *,
    saturation: tuple[float, float] = (0.45, 1.0),
    value: tuple[float, float] = (0.45, 1.0),
) -> list[Colour]:
    """`size` colours of independent random hue: colour must not name the artist."""
    return [
        _hsv(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
        for _ in range(size)
    ]


def _pale_colour(rng: np.random.Generator) -> Colour:
    """An off-white of random tint, for primed canvas and paper grounds."""
    return _hsv(rng.uniform(), rng.uniform(0.0, 0.18), rng.uniform(0.82, 0.97))


def _dark_colour(rng: np.random.Generator) -> Colour:
    return _hsv(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.18))


def _scale(width: int, height: int) -> float:
    return max(width, height) / _REFERENCE_SIDE


def _add_grain(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """Adds faint luminance noise so that no painting is perfectly flat."""
    pixels = np.asarray(image, dtype=np.float32)
    grain = rng.normal(0.0, _GRAIN, pixels.shape[:2] + (1,)).astype(np.float32)
    return Image.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8), "RGB")


def paint_grid(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Flat colour blocks between thick dark lines on a pale ground (Mondrian-like)."""
    image = Image.new("RGB", (width, height), _pale_colour(rng))
    draw = ImageDraw.Draw(image)
    min_side = max(width, height) // 9
    rects = [(0, 0, width, height)]
    cuts = []
    for _ in range(int(rng.integers(5, 13))):
        areas = np.array([(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in rects], float)
        index = int(rng.choice(len(rects), p=areas / areas.sum()))
        x0, y0, x1, y1 = rects[index]
        vertical = (x1 - x0 > y1 - y0) if rng.uniform() < 0.7 else rng.uniform() < 0.5
        if vertical and x1 - x0 >= 2 * min_side:
            x = int(rng.integers(x0 + min_side, x1 - min_side + 1))
            rects[index:index + 1] = [(x0, y0, x, y1), (x, y0, x1, y1)]
            cuts.append((x, y0, x, y1))
        elif not vertical and y1 - y0 >= 2 * min_side:
            y = int(rng.integers(y0 + min_side, y1 - min_side + 1))
            rects[index:index + 1] = [(x0, y0, x1, y), (x0, y, x1, y1)]
            cuts.append((x0, y, x1, y))
    palette = _random_palette(rng, 3, saturation=(0.65, 1.0), value=(0.55, 1.0))
    palette.append(_dark_colour(rng))
    # At least one block is coloured, and never most of them: the ground shows.
    num_filled = int(rng.integers(1, max(2, len(rects) // 2) + 1))
    for index in rng.permutation(len(rects))[:num_filled]:
        x0, y0, x1, y1 = rects[index]
        colour = palette[int(rng.choice(4, p=[0.3, 0.3, 0.3, 0.1]))]
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    line_colour = _dark_colour(rng)
    half = max(1, round(rng.uniform(2.0, 4.5) * _scale(width, height)))
    for x0, y0, x1, y1 in cuts:
        draw.rectangle((x0 - half, y0 - half, x1 + half, y1 + half), fill=line_colour)
    return _add_grain(rng, image)


def _random_walk(
    rng: np.random.Generator, width: int, height: int, *, steps: int, step: float
) -> list[tuple[float, float]]:
    """A smoothly turning path from a random point: one thrown skein of paint."""
    heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0.0, 0.3, steps))
    offsets = np.stack([np.cos(heading), np.sin(heading)], axis=1) * step
    start = rng.uniform((0, 0), (width, height))
    points = start + np.cumsum(offsets, axis=0)
    return [tuple(p) for p in points]


def paint_drips(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Tangled thrown lines and splatters over the whole canvas (Pollock-like)."""
    if rng.uniform() < 0.5:
        ground = _pale_colour(rng)
    else:
        ground = _hsv(rng.uniform(), rng.uniform(0.0, 0.5), rng.uniform(0.15, 0.5))
    image = Image.new("RGB", (width, height), ground)
    draw = ImageDraw.Draw(image)
    scale = _scale(width, height)
    palette = _random_palette(rng, int(rng.integers(2, 5)))
    palette += [_dark_colour(rng), _pale_colour(rng)]
    # Layers go down in random order: the last colour thrown lies on top.
    for colour in [palette[i] for i in rng.permutation(len(palette))]:
        for _ in range(int(rng.integers(7, 14))):
            points = _random_walk(
                rng, width, height,
                steps=int(rng.integers(60, 140)), step=rng.uniform(3.0, 7.0) * scale,
            )
            line_width = max(1, round(rng.uniform(0.8, 3.5) * scale))
            draw.line(points, fill=colour, width=line_width, joint="curve")
        for _ in range(int(rng.integers(3, 7))):
            centre = rng.uniform((0, 0), (width, height))
            count = int(rng.integers(10, 35))
            spots = centre + rng.normal(0.0, rng.uniform(4, 20) * scale, (count, 2))
            radii = (rng.exponential(1.2, count) + 0.6) * scale
            for (x, y), r in zip(spots, radii):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return _add_grain(rng, image)


def _landscape(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A flat-colour scene (sky, ground, a few figures) for dots to sample from."""
    palette = _random_palette(rng, 6, saturation=(0.3, 0.9), value=(0.4, 1.0))
    scene = Image.new("RGB", (width, height), palette[0])
    draw = ImageDraw.Draw(scene)
    horizon = rng.uniform(0.3, 0.7) * height
    tilt = rng.uniform(-0.15, 0.15) * height
    draw.polygon(
        [(0, horizon - tilt), (width, horizon + tilt), (width, height), (0, height)],
        fill=palette[1],
    )
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform((0, horizon * 0.6), (width, height))
        rx = rng.uniform(0.04, 0.15) * width
        ry = rng.uniform(0.08, 0.3) * height
        colour = palette[int(rng.integers(2, len(palette)))]
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=colour)
    return np.asarray(scene)


def paint_dots(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A scene built only from small round dots of jittered colour (Seurat-like)."""
    scene = _landscape(rng, width, height)
    image = Image.new("RGB", (width, height), _pale_colour(rng))
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.013, 0.018) * max(width, height)
    spacing = radius * rng.uniform(1.5, 1.9)
    xs, ys = np.meshgrid(
        np.arange(0, width + spacing, spacing), np.arange(0, height + spacing, spacing)
    )
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
    centres += rng.uniform(-0.45, 0.45, centres.shape) * spacing
    centres = centres[rng.permutation(len(centres))]
    pixel = np.clip(centres, 0, (width - 1, height - 1)).astype(int)
    colours = scene[pixel[:, 1], pixel[:, 0]] + rng.normal(0.0, 35.0, (len(centres), 3))
    colours = np.clip(colours, 0, 255).astype(int)
    for (x, y), colour in zip(centres.tolist(), colours.tolist()):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tuple(colour))
    return _add_grain(rng, image)


def paint_fields(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Two or three stacked soft-edged colour fields on a ground (Rothko-like)."""
    hue = rng.uniform()
    ground = _hsv(hue, rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.75))
    image = Image.new("RGB", (width, height), ground)
    draw = ImageDraw.Draw(image)
    num_fields = int(rng.integers(2, 4))
    margin_x = rng.uniform(0.06, 0.13) * width
    margin_y = rng.uniform(0.04, 0.09) * height
    gap = rng.uniform(0.03, 0.07) * height
    usable = height - 2 * margin_y - (num_fields - 1) * gap
    top = margin_y
    for share in rng.dirichlet(np.full(num_fields, 3.0)):
        bottom = top + share * usable
        colour = _hsv(
            hue + rng.normal(0.0, 0.15), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0)
        )
        wobble = rng.uniform(-0.015, 0.015, 4) * width
        draw.rectangle(
            (margin_x + wobble[0], top + wobble[1],
             width - margin_x + wobble[2], bottom + wobble[3]),
            fill=colour,
        )
        top = bottom + gap
    image = image.filter(
        ImageFilter.GaussianBlur(rng.uniform(0.012, 0.03) * max(width, height))
    )
    # Uneven, layered washes: a smooth random brightness field over the canvas.
    washes = rng.uniform(0.88, 1.12, (6, 6)).astype(np.float32)
    washes = Image.fromarray(washes, "F").resize((width, height), Image.BICUBIC)
    pixels = np.asarray(image, np.float32) * np.asarray(washes)[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return _add_grain(rng, image)


def paint_orbits(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Circles, concentric rings, triangles and crossing straight lines (Kandinsky-like)."""
    image = Image.new("RGB", (width, height), _pale_colour(rng))
    draw = ImageDraw.Draw(image)
    scale = _scale(width, height)
    long_side = max(width, height)
    palette = _random_palette(rng, 5)
    ink = _dark_colour(rng)
    shapes = (["circle"] * int(rng.integers(3, 8)) + ["line"] * int(rng.integers(4, 11))
              + ["triangle"] * int(rng.integers(0, 3)))
    for shape in rng.permutation(shapes):
        x, y = rng.uniform((0, 0), (width, height))
        colour = palette[int(rng.integers(len(palette)))]
        if shape == "circle":
            radius = rng.uniform(0.04, 0.2) * long_side
            rings = int(rng.integers(1, 4)) if rng.uniform() < 0.5 else 1
            outline = max(1, round(rng.uniform(1.0, 2.5) * scale))
            for ring in range(rings):
                r = radius * (rings - ring) / rings
                fill = palette[int(rng.integers(len(palette)))] if ring else colour
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=ink,
                             width=outline)
        elif shape == "line":
            angle = rng.uniform(0, math.pi)
            half = rng.uniform(0.15, 0.5) * long_side
            dx, dy = half * math.cos(angle), half * math.sin(angle)
            line_colour = ink if rng.uniform() < 0.6 else colour
            draw.line((x - dx, y - dy, x + dx, y + dy), fill=line_colour,
                      width=max(1, round(rng.uniform(1.0, 4.0) * scale)))
        else:
            size = rng.uniform(0.05, 0.18) * long_side
            angles = rng.uniform(0, 2 * math.pi) + np.array([0.0, 2.1, 4.2])
            corners = [(x + size * math.cos(a), y + size * math.sin(a)) for a in angles]
            draw.polygon(corners, fill=colour, outline=ink)
    return _add_grain(rng, image)


def _trace_flow(
    rng: np.random.Generator, starts: np.ndarray, width: int, height: int, *, steps: int,
    step: float,
) -> np.ndarray:
    """Follows a field of a few random vortices: [strokes, steps + 1, 2] points."""
    num_vortices = int(rng.integers(2, 5))
    centres = rng.uniform((0, 0), (width, height), (num_vortices, 2))
    radii = rng.uniform(0.12, 0.3, num_vortices) * max(width, height)
    spins = rng.choice([-1.0, 1.0], num_vortices) * rng.uniform(1.5, 3.0, num_vortices)
    drift_angle = rng.uniform(0, 2 * math.pi)
    drift = np.array([math.cos(drift_angle), math.sin(drift_angle)]) * 0.4
    points = [starts]
    for _ in range(steps):
        p = points[-1]
        velocity = np.broadcast_to(drift, p.shape).copy()
        for centre, radius, spin in zip(centres, radii, spins):
            d = p - centre
            weight = spin * np.exp(-(d**2).sum(axis=1) / (2 * radius**2))
            velocity += np.stack([-d[:, 1], d[:, 0]], axis=1) / radius * weight[:, None]
        norm = np.linalg.norm(velocity, axis=1, keepdims=True) + 1e-6
        points.append(p + velocity / norm * step)
    return np.stack(points, axis=1)


def paint_swirls(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Dense short brush strokes that follow swirling currents (Van Gogh-like)."""
    scale = _scale(width, height)
    sky = _random_palette(rng, 3, saturation=(0.4, 1.0), value=(0.35, 1.0))
    land = _random_palette(rng, 3, saturation=(0.4, 1.0), value=(0.25, 0.9))
    image = Image.new("RGB", (width, height), sky[0])
    draw = ImageDraw.Draw(image)
    spacing = rng.uniform(5.0, 6.5) * scale
    num_strokes = int(width * height / spacing**2)
    starts = rng.uniform((0, 0), (width, height), (num_strokes, 2))
    strokes = _trace_flow(
        rng, starts, width, height, steps=int(rng.integers(8, 12)),
        step=rng.uniform(2.5, 3.5) * scale,
    )
    horizon = rng.uniform(0.5, 0.85) * height
    stroke_width = max(2, round(rng.uniform(2.5, 3.5) * scale))
    palettes = np.array([sky, land], dtype=np.float32)
    colours = palettes[(starts[:, 1] >= horizon).astype(int),
                       rng.integers(0, 3, num_strokes)]
    colours += rng.normal(0.0, 12.0, colours.shape)
    colours = np.clip(colours, 0, 255).astype(int).tolist()
    for points, colour in zip(strokes.tolist(), colours):
        draw.line([tuple(p) for p in points], fill=tuple(colour), width=stroke_width)
    return _add_grain(rng, image)


@dataclasses.dataclass(frozen=True)
class Artist:
    """A fictional painter: display name, file-name slug and style generator."""

    name: str
    slug: str
    paint: Painter


# The order defines the labels: changing it needs a new dataset version.
ARTISTS = (
    Artist("Piet Gridwell", "piet_gridwell", paint_grid),
    Artist("Jackson Splatterby", "jackson_splatterby", paint_drips),
    Artist("Georges Pointelle", "georges_pointelle", paint_dots),
    Artist("Marko Hazeworth", "marko_hazeworth", paint_fields),
    Artist("Vasily Orbisky", "vasily_orbisky", paint_orbits),
    Artist("Vincent van Swirl", "vincent_van_swirl", paint_swirls),
)
