"""Build speed: the best_artworks builder vs a one-process Pillow loop over the same JPEGs.

Writes `--num_images` synthetic full-size JPEGs (~1 MP) into `<Artist>/`
folders, times a single-process loop of the builder's own per-image work
(read, decode, RGB, resize to the stored size, JPEG encode), then times the
default (non-Beam) `download_and_prepare` of the same folder, which also
hashes, checks, deduplicates, splits and writes TFRecords, on every core.

The last line printed is one JSON object:
  {"builder_images_per_s": …, "pillow_loop_images_per_s": …, "ratio": …}
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import tempfile
import time

from absl import logging
import numpy as np
from PIL import Image
# TFDS imports TensorFlow lazily, on its first TFRecord write: import it here
# so the timing measures building, not a one-off import of several seconds.
import tensorflow as tf  # noqa: F401  pylint: disable=unused-import
import tensorflow_datasets as tfds

from artist_tfds.best_artworks import best_artworks_dataset_builder as builder_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import workers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=300)
    parser.add_argument("--width", type=int, default=1200, help="Source width (px).")
    parser.add_argument("--height", type=int, default=900, help="Source height (px).")
    parser.add_argument("--artists", type=int, default=6, help="Artist folders.")
    parser.add_argument("--config", default="all", help="Builder config to time.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Time each side this many times; the best run counts.")
    parser.add_argument("--workdir", default=None,
                        help="Where to write the JPEGs and datasets (default: a temp dir).")
    return parser.parse_args()


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Brush-like texture: smooth colour fields plus fine noise, so JPEGs are ~photo-sized."""
    small = rng.uniform(0, 255, (height // 40 + 2, width // 40 + 2, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC),
                      dtype=np.int16)
    noise = rng.normal(0, 8, (height, width, 3)).astype(np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_paintings(root: pathlib.Path, *, num_images: int, width: int, height: int,
                    artists: int) -> list[str]:
    """`num_images` distinct JPEGs, portrait and landscape, in `artists` folders."""
    rng = np.random.default_rng(0)
    textures = [_texture(rng, width, height) for _ in range(4)]
    paths = []
    for index in range(num_images):
        pixels = np.roll(textures[index % 4], shift=(index * 7, index * 13), axis=(0, 1))
        pixels = (pixels.astype(np.int16) + (index % 50) - 25).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        if index % 3 == 0:
            image = image.transpose(Image.Transpose.ROTATE_90)  # Portrait.
        folder = root / f"Artist_{index % artists:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"Artist_{index % artists:02d}_{index}.jpg"
        image.save(path, format="JPEG", quality=90)
        paths.append(str(path))
    return paths


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_pillow_loop(paths: list[str], stored: images.StoredSize) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the one-process loop."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    for path in paths:
        images.encode_file(path, stored)
    return time.perf_counter() - start, _cpu_seconds() - cpu


def time_builder(manual_dir: pathlib.Path, data_dir: pathlib.Path,
                 config: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a default build of `manual_dir`."""
    shutil.rmtree(data_dir, ignore_errors=True)
    builder = builder_lib.Builder(data_dir=str(data_dir), config=config)
    start, cpu = time.perf_counter(), _cpu_seconds()
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return time.perf_counter() - start, _cpu_seconds() - cpu


def main() -> None:
    args = parse_args()
    logging.set_verbosity(logging.WARNING)
    tfds.disable_progress_bar()
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="build_bench_"))
    manual_dir = workdir / "paintings"
    shutil.rmtree(manual_dir, ignore_errors=True)
    paths = write_paintings(manual_dir, num_images=args.num_images, width=args.width,
                            height=args.height, artists=args.artists)
    megapixels = args.width * args.height / 1e6
    print(f"{len(paths)} JPEGs of {args.width}x{args.height} ({megapixels:.2f} MP), "
          f"{sum(pathlib.Path(p).stat().st_size for p in paths) / 1e6:.0f} MB, in {manual_dir}")
    stored = builder_lib.Builder.builder_configs[args.config].stored_size
    # Alternate the two so a burst of load elsewhere hits both; keep the best.
    loop_runs, builder_runs = [], []
    for _ in range(args.repeats):
        loop_runs.append(time_pillow_loop(paths, stored))
        builder_runs.append(time_builder(manual_dir, workdir / "data", args.config))
    (loop_seconds, loop_cpu), (builder_seconds, builder_cpu) = min(loop_runs), min(builder_runs)
    print(f"pillow loop (1 process): {loop_seconds:.2f} s wall, {loop_cpu:.2f} s CPU  (runs: "
          + ", ".join(f"{t:.2f}" for t, _ in loop_runs) + ")")
    print(f"builder ({workers.available_cpus()} cores, config {args.config}): "
          f"{builder_seconds:.2f} s wall, {builder_cpu:.2f} s CPU  (runs: "
          + ", ".join(f"{t:.2f}" for t, _ in builder_runs) + ")")
    # Other processes competing for the cores show up as wall >> CPU / cores.
    print(f"load average while measuring: {os.getloadavg()[0]:.2f}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    builder_rate = len(paths) / builder_seconds
    loop_rate = len(paths) / loop_seconds
    print(json.dumps({
        "builder_images_per_s": round(builder_rate, 1),
        "pillow_loop_images_per_s": round(loop_rate, 1),
        "ratio": round(builder_rate / loop_rate, 2),
    }))


if __name__ == "__main__":
    main()
