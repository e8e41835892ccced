"""Build speed: the best_artworks builder vs a one-process Pillow loop over the same JPEGs.

Writes `--num_images` synthetic full-size JPEGs (~1 MP) into `<Artist>/`
folders, times a single-process loop of the builder's own per-image work
(read, decode, RGB, resize to the stored size, JPEG encode), then times the
default (non-Beam) `download_and_prepare` of the same folder, which also
hashes, checks, deduplicates, splits and writes TFRecords, on every core.

The last line printed is one JSON object:
  {"builder_images_per_s": …, "pillow_loop_images_per_s": …, "ratio": …}

`--beam` compares the Beam build (the builder's pinned Python runner,
direct_running_mode=multi_processing, `--beam_workers` processes) with the
default process-pool build instead, at each of `--sizes` paintings. Each
folder is made once, into `--cache_dir`, from varied crops of the paintings in
`--source_dir` (any folder the builder reads; default: `--num_images`
synthetic ones), re-encoded as JPEG. Its last line:
  {"<size>": {"pool_images_per_s": …, "beam_images_per_s": …, "ratio": …,
              "beam_extra_s": …}, …}
where ratio is Beam's rate over the pool's.
"""

import argparse
import functools
import json
import logging as std_logging
import os
import pathlib
import resource
import shutil
import tempfile
import time

from absl import logging
import apache_beam as beam
import numpy as np
from PIL import Image
from PIL import ImageOps
# TFDS imports TensorFlow lazily, on its first TFRecord write: import it here
# so the timing measures building, not a one-off import of several seconds.
import tensorflow as tf  # noqa: F401  pylint: disable=unused-import
import tensorflow_datasets as tfds

from artist_tfds.best_artworks import best_artworks_dataset_builder as builder_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import layout
from artist_tfds.best_artworks import workers
from benchmarks import json_result

# Crops keep 60-100 % of each side (never under the builder's 64 px floor), so
# every derived painting differs from its source and from its siblings.
CROP_FRACTION = (0.6, 1.0)
JPEG_QUALITY = (80, 95)


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
    parser.add_argument("--beam", action="store_true",
                        help="Time the Beam build against the process pool at each of --sizes.")
    parser.add_argument("--sizes", default="1000,5000,20000",
                        help="--beam: paintings per folder, comma-separated.")
    parser.add_argument("--source_dir", default=None,
                        help="--beam: paintings sorted by artist to crop from "
                             "(default: --num_images synthetic ones).")
    parser.add_argument("--cache_dir", default=None,
                        help="--beam: where the cropped folders are made once and reused "
                             "(default: build_bench_crops in the temp dir, or in --workdir "
                             "for synthetic sources).")
    parser.add_argument("--beam_workers", type=int, default=2,
                        help="--beam: direct_num_workers of the multi_processing Beam build.")
    parser.add_argument("--json_out", default=None, help="Also write the result, with the "
                        "command, commit and machine, to this file (e.g. results/NAME.json).")
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


def time_builder(manual_dir: pathlib.Path, data_dir: pathlib.Path, config: str, *,
                 beam_options: beam.options.pipeline_options.PipelineOptions | None = None
                 ) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a build of `manual_dir`: default, or Beam if options."""
    shutil.rmtree(data_dir, ignore_errors=True)
    builder = builder_lib.Builder(data_dir=str(data_dir), config=config)
    start, cpu = time.perf_counter(), _cpu_seconds()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir), beam_options=beam_options))
    return time.perf_counter() - start, _cpu_seconds() - cpu


def split_sizes(data_dir: pathlib.Path, config: str) -> dict[str, int]:
    splits = builder_lib.Builder(data_dir=str(data_dir), config=config).info.splits
    return {name: splits[name].num_examples for name in sorted(splits)}


# --- --beam: folders of varied crops, Beam vs the process pool -----------------------------

def write_crop(source: str, target: str, seed: int) -> bool:
    """One random crop of `source`, maybe mirrored, re-encoded as JPEG; False if unreadable."""
    rng = np.random.default_rng(seed)
    try:
        with Image.open(source) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    width, height = image.size
    crop_w, crop_h = (min(side, max(images.MIN_SIDE, round(side * rng.uniform(*CROP_FRACTION))))
                      for side in (width, height))
    left, top = rng.integers(0, width - crop_w + 1), rng.integers(0, height - crop_h + 1)
    image = image.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image.save(target, format="JPEG", quality=int(rng.integers(*JPEG_QUALITY, endpoint=True)))
    return True


def make_crops(source_dir: pathlib.Path, folder: pathlib.Path, count: int) -> int:
    """`folder`/<artist folder>/ with `count` crops of the source paintings, made once."""
    done = folder.with_name(folder.name + ".complete")  # Outside: not a file to build.
    if done.exists() and json.loads(done.read_text())["source"] == str(source_dir.resolve()):
        return json.loads(done.read_text())["made"]
    shutil.rmtree(folder, ignore_errors=True)
    sources = layout.scan(source_dir).files
    jobs = []
    for index in range(count):
        source = sources[index % len(sources)]
        target = folder / source.folder / f"{pathlib.Path(source.path).stem}_crop{index}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        jobs.append(functools.partial(write_crop, source.path, str(target), index))
    made = sum(workers.run(jobs))
    done.write_text(json.dumps({"source": str(source_dir.resolve()), "made": made}))
    return made


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def compare_at(folder: pathlib.Path, count: int, args: argparse.Namespace,
               workdir: pathlib.Path, beam_options) -> dict:
    """Beam vs the process pool on one folder, alternating, best of --repeats; prints both."""
    pool_runs, beam_runs = [], []
    for _ in range(args.repeats):
        pool_runs.append(time_builder(folder, workdir / "pool", args.config))
        beam_runs.append(time_builder(folder, workdir / "beam", args.config,
                                      beam_options=beam_options))
    same = split_sizes(workdir / "pool", args.config) == split_sizes(workdir / "beam", args.config)
    if not same:
        raise SystemExit(f"Beam and the pool built different splits from {folder}")
    (pool_s, pool_cpu), (beam_s, beam_cpu) = min(pool_runs), min(beam_runs)
    for name, seconds, cpu, runs in (
            (f"process pool ({workers.available_cpus()} cores)", pool_s, pool_cpu, pool_runs),
            (f"Beam (FnApiRunner, multi_processing, {args.beam_workers} workers)",
             beam_s, beam_cpu, beam_runs)):
        print(f"  {name}: {seconds:.1f} s wall, {cpu:.1f} s CPU, "
              f"{count / seconds:.1f} images/s  (runs: "
              + ", ".join(f"{t:.1f}" for t, _ in runs) + ")")
    print(f"  Beam / pool: {pool_s / beam_s:.2f} of the rate, {beam_s - pool_s:+.1f} s; "
          f"same splits: {same}; load average {os.getloadavg()[0]:.2f}", flush=True)
    return {"pool_images_per_s": _rate(count, pool_s), "beam_images_per_s": _rate(count, beam_s),
            "ratio": round(pool_s / beam_s, 3), "beam_extra_s": round(beam_s - pool_s, 1),
            "pool_s": pool_s, "beam_s": beam_s}


def compare_beam(args: argparse.Namespace, workdir: pathlib.Path) -> dict:
    """{paintings: figures} for each of --sizes, folders cropped from --source_dir."""
    if args.source_dir:
        source_dir = pathlib.Path(args.source_dir)
        cache_dir = pathlib.Path(args.cache_dir or pathlib.Path(tempfile.gettempdir(),
                                                                "build_bench_crops"))
    else:  # Synthetic paintings differ with the flags: crop them afresh, in workdir.
        source_dir = workdir / "paintings"
        shutil.rmtree(source_dir, ignore_errors=True)
        write_paintings(source_dir, num_images=args.num_images, width=args.width,
                        height=args.height, artists=args.artists)
        cache_dir = pathlib.Path(args.cache_dir or workdir / "crops")
    # No runner named, as `tfds build --beam_pipeline_options=...` without one:
    # the builder pins Beam's Python runner (FnApiRunner), never Prism.
    beam_options = beam.options.pipeline_options.PipelineOptions([
        "--direct_running_mode=multi_processing", f"--direct_num_workers={args.beam_workers}"])
    figures = {}
    for size in (int(s) for s in args.sizes.split(",")):
        folder = cache_dir / f"{source_dir.name}_{size}"
        count = make_crops(source_dir, folder, size)
        print(f"{count} paintings, crops of {source_dir}, in {folder}", flush=True)
        figures[str(count)] = compare_at(folder, count, args, workdir, beam_options)
    return figures


def print_beam_table(figures: dict) -> None:
    """The table, then the cost of one more image on each side between consecutive sizes."""
    print("| paintings | process pool images/s | Beam images/s | Beam / pool | Beam extra s |")
    print("|---|---|---|---|---|")
    for count, row in figures.items():
        print(f"| {int(count):,} | {row['pool_images_per_s']} | {row['beam_images_per_s']} | "
              f"{row['ratio']:.2f} | {row['beam_extra_s']:+.1f} |")
    sizes = [int(count) for count in figures]
    for small, large in zip(sizes, sizes[1:]):
        added = large - small
        pool_ms, beam_ms = (1000 * (figures[str(large)][k] - figures[str(small)][k]) / added
                            for k in ("pool_s", "beam_s"))
        print(f"{small:,} -> {large:,} paintings, each one more: pool {pool_ms:.2f} ms, "
              f"Beam {beam_ms:.2f} ms")


def main_beam(args: argparse.Namespace, workdir: pathlib.Path) -> None:
    # Beam's worker processes log every start-up step through this process.
    std_logging.getLogger("apache_beam").setLevel(std_logging.ERROR)
    figures = compare_beam(args, workdir)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    print_beam_table(figures)
    json_result.emit({count: {k: row[k] for k in ("pool_images_per_s", "beam_images_per_s",
                                                  "ratio", "beam_extra_s")}
                      for count, row in figures.items()}, args.json_out)


def main() -> None:
    args = parse_args()
    logging.set_verbosity(logging.WARNING)
    tfds.disable_progress_bar()
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="build_bench_"))
    if args.beam:
        main_beam(args, workdir)
        return
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
    json_result.emit({
        "builder_images_per_s": round(builder_rate, 1),
        "pillow_loop_images_per_s": round(loop_rate, 1),
        "ratio": round(builder_rate / loop_rate, 2),
    }, args.json_out)


if __name__ == "__main__":
    main()
