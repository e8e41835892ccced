"""Serving speed: encoded bytes through `serving_default` vs the same model on decoded pixels.

    python -m benchmarks.serving_bench --model_dir=WORKDIR/saved_model [--images=DIR]

In one process, on one exported SavedModel:

* latency: one encoded image per `serving_default` call, p50 and p95;
* bytes path: batches of `--batch_size` encoded images through `serving_default`
  (header checks, decode, resize, rescale, model, softmax, top-k);
* tensor path: the same images, decoded and resized beforehand to the model's
  size, as uint8 through `serve_pixels` (rescale, model, softmax, top-k: the
  signature skips resizing pixels that already have the model's size). This is
  what a client that decodes for itself would send, and runs the same graph
  minus decoding, so the ratio is the cost of decoding inside the server.

The two paths alternate in `--rounds` rounds so that load from other processes
hits both alike; the throughputs are medians over rounds, the ratio the median
of the per-round ratios. Each round also prints the ratio of images per CPU
second of this process, which other processes' load disturbs far less. Images come from `--images` (a folder, searched
recursively) or else from the stored JPEGs of a TFDS split (`--dataset`,
`--data_dir`, `--split`).

A model exported with multi-crop inference ("views" in its metadata) makes
its views from the whole painting, which a pre-resized square no longer is:
for it only the bytes path and the latency are measured (tensor path and
ratio null). Its `views` (per image) is in the JSON: compare
`bytes_images_per_s` with a one-view export of the same model for the cost
of the views.

`--baseline_dir=OTHER` prices a change to the export itself: another SavedModel
(e.g. the same kept weights exported without a gallery, so without the
"unknown artist" rule's distance test, or with one view instead of ten) takes
the bytes path in turn with this one, round by round on the same batches, and
the median per-round ratio of their CPU ms per image is `baseline_cost_ratio`
(this model's cost in units of the baseline's); single-image latencies alternate
too.

The last line printed is one JSON object:
  {"p50_ms": …, "p95_ms": …, "bytes_images_per_s": …, "tensor_images_per_s": …, "ratio": …,
   "bytes_cpu_ms_per_image": …, "views": …}
and with --baseline_dir also "baseline_p50_ms", "baseline_cpu_ms_per_image" and
"baseline_cost_ratio".
"""

import argparse
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

from benchmarks import json_result


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="Exported SavedModel directory.")
    parser.add_argument("--baseline_dir", default=None,
                        help="Another SavedModel whose serving_default alternates with this "
                             "one's on the same images: the cost ratio of the difference.")
    parser.add_argument("--images", default=None, help="Folder of images to send.")
    parser.add_argument("--dataset", default="sample_paintings",
                        help="TFDS dataset whose stored images to send when --images is unset.")
    parser.add_argument("--data_dir", default="demo/data", help="TFDS data directory.")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num_images", type=int, default=128, help="Distinct images to cycle.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=9, help="Alternating throughput rounds.")
    parser.add_argument("--calls", type=int, default=20, help="Batches per path per round.")
    parser.add_argument("--latency_calls", type=int, default=200)
    parser.add_argument("--json_out", default=None, help="Also write the result, with the "
                        "command, commit and machine, to this file (e.g. results/NAME.json).")
    return parser.parse_args()


def load_images(args: argparse.Namespace) -> list[bytes]:
    """Encoded images, as a client would send them."""
    if args.images:
        paths = sorted(os.path.join(root, name)  # Folders linked in count (open_set's).
                       for root, _, names in os.walk(args.images, followlinks=True)
                       for name in names if name.lower().endswith(IMAGE_EXTENSIONS))
        if not paths:
            raise SystemExit(f"--images={args.images}: no {', '.join(IMAGE_EXTENSIONS)} files")
        blobs = []
        for path in paths[:args.num_images]:
            with open(path, "rb") as f:
                blobs.append(f.read())
        return blobs
    import tensorflow_datasets as tfds

    import artist_tfds  # noqa: F401  Registers the builders.

    builder = tfds.builder(args.dataset, data_dir=args.data_dir)
    ds = builder.as_dataset(split=args.split, decoders={"image": tfds.decode.SkipDecoding()})
    return [example["image"] for example in ds.take(args.num_images).as_numpy_iterator()]


def decoded_pixels(blobs: list[bytes], *, image_size: int, resize_mode: str) -> np.ndarray:
    """The tensor path's input: the pipeline's own decode and resize, done beforehand."""
    from pipeline import ops

    return np.stack([ops.decode_resized(blob, image_size, mode=resize_mode).numpy()
                     for blob in blobs])


def preprocessing_cpu_ms(batches: list, *, image_size: int, resize_mode: str) -> tuple[float, float]:
    """(decode, resize) CPU ms per image with the pipeline's ops: what the bytes path adds."""
    from pipeline import ops

    size = len(batches[0])
    spec = [tf.TensorSpec([size], tf.string)]
    decode = tf.function(lambda b: [tf.shape(ops.decode_for_size(b[i], image_size))
                                    for i in range(size)], input_signature=spec)
    decode_resize = tf.function(lambda b: [ops.decode_resized(b[i], image_size, mode=resize_mode)
                                           for i in range(size)], input_signature=spec)
    costs = []
    for fn in (decode, decode_resize):
        fn(batches[0])
        cpu = time.process_time()
        for batch in batches * 3:
            fn(batch)
        costs.append(1000 * (time.process_time() - cpu) / (3 * len(batches) * size))
    return costs[0], costs[1] - costs[0]


def images_per_second(fn, batches: list, calls: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        fn(batches[i % len(batches)])
    images = calls * len(batches[0])
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def main() -> None:
    args = parse_args()
    loaded = tf.saved_model.load(args.model_dir)
    serve_bytes = loaded.signatures["serving_default"]
    serve_pixels = loaded.signatures["serve_pixels"]
    metadata = json.loads(loaded.signatures["metadata"]()["metadata"].numpy())
    blobs = load_images(args)
    pixels = decoded_pixels(blobs, image_size=metadata["image_size"],
                            resize_mode=metadata["resize_mode"])
    n = len(blobs) // args.batch_size * args.batch_size
    if n == 0:
        raise SystemExit(f"need at least --batch_size={args.batch_size} images, got {len(blobs)}")
    byte_batches = [tf.constant(blobs[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    pixel_batches = [tf.constant(pixels[i:i + args.batch_size]) for i in range(0, n, args.batch_size)]
    sizes = [tf.image.extract_jpeg_shape(b).numpy()[:2] for b in blobs if b[:2] == b"\xff\xd8"]
    print(f"{len(blobs)} images, {np.mean([len(b) for b in blobs]) / 1024:.1f} KiB on average"
          + (f", JPEG median {np.median(sizes, 0).astype(int).tolist()} px" if sizes else "")
          + f"; model input {metadata['image_size']} px ({metadata['resize_mode']})")

    def run_bytes(batch):
        return serve_bytes(images=batch)["probabilities"].numpy()

    def run_pixels(batch):
        return serve_pixels(pixels=batch)["probabilities"].numpy()

    run_baseline = None
    if args.baseline_dir:
        serve_baseline = tf.saved_model.load(args.baseline_dir).signatures["serving_default"]

        def run_baseline(batch):
            return serve_baseline(images=batch)["probabilities"].numpy()

        run_baseline(byte_batches[0])  # Warm-up (below: three more).

    views = (metadata.get("views") or {}).get("count", 1)
    if views > 1:
        print(f"{views} views per image: bytes path only (the tensor path sends squares)")
        run_pixels = None
    else:  # The same predictions both ways, or the comparison means nothing.
        np.testing.assert_allclose(run_bytes(byte_batches[0]), run_pixels(pixel_batches[0]),
                                   rtol=1e-4, atol=1e-6)
    for _ in range(3):  # Warm-up: graph optimisation, thread pools, allocator.
        run_bytes(byte_batches[0]), run_pixels and run_pixels(pixel_batches[0])
        run_baseline and run_baseline(byte_batches[0])

    byte_rates, tensor_rates, cpu_ratios, tensor_cpu_ms, byte_cpu_ms = [], [], [], [], []
    baseline_cpu_ms, baseline_ratios = [], []
    for round_ in range(args.rounds):
        byte_rate, byte_cpu_rate = images_per_second(run_bytes, byte_batches, args.calls)
        byte_cpu_ms.append(1000 / byte_cpu_rate)
        if run_baseline is not None:
            _, baseline_cpu_rate = images_per_second(run_baseline, byte_batches, args.calls)
            baseline_cpu_ms.append(1000 / baseline_cpu_rate)
            baseline_ratios.append(baseline_cpu_rate / byte_cpu_rate)
            print(f"round {round_}: {byte_cpu_ms[-1]:.2f} CPU ms per image against the "
                  f"baseline's {baseline_cpu_ms[-1]:.2f}: x{baseline_ratios[-1]:.3f}")
        if run_pixels is None:
            byte_rates.append(byte_rate)
            print(f"round {round_}: bytes {byte_rate:7.1f} images/s "
                  f"({1000 / byte_cpu_rate:.2f} CPU ms per image)")
            continue
        tensor_rate, tensor_cpu_rate = images_per_second(run_pixels, pixel_batches, args.calls)
        byte_rates.append(byte_rate)
        tensor_rates.append(tensor_rate)
        # Per CPU second: what the ratio would be on an otherwise idle machine
        # when both paths keep every core busy; steadier under others' load.
        cpu_ratios.append(byte_cpu_rate / tensor_cpu_rate)
        tensor_cpu_ms.append(1000 / tensor_cpu_rate)
        print(f"round {round_}: bytes {byte_rate:7.1f} images/s, tensors {tensor_rate:7.1f} "
              f"images/s, ratio {byte_rate / tensor_rate:.3f} (per CPU second "
              f"{cpu_ratios[-1]:.3f})")
    if run_pixels is not None:
        print(f"median ratio per CPU second: {statistics.median(cpu_ratios):.3f}")
        decode_ms, resize_ms = preprocessing_cpu_ms(
            byte_batches, image_size=metadata["image_size"], resize_mode=metadata["resize_mode"])
        print(f"CPU ms per image: decode {decode_ms:.3f} + resize {resize_ms:.3f} (the "
              f"pipeline's ops, batch unrolled) beside {statistics.median(tensor_cpu_ms):.3f} "
              "for the rest (the tensor path)")

    single = [tf.constant([blob]) for blob in blobs]
    latencies, baseline_latencies = [], []
    for i in range(args.latency_calls):
        for fn, times in ((run_bytes, latencies), (run_baseline, baseline_latencies)):
            if fn is not None:
                start = time.perf_counter()
                fn(single[i % len(single)])
                times.append(1000 * (time.perf_counter() - start))

    result = {
        "p50_ms": round(float(np.percentile(latencies, 50)), 3),
        "p95_ms": round(float(np.percentile(latencies, 95)), 3),
        "bytes_images_per_s": round(statistics.median(byte_rates), 1),
        "tensor_images_per_s": round(statistics.median(tensor_rates), 1) if tensor_rates else None,
        "ratio": round(statistics.median(b / t for b, t in zip(byte_rates, tensor_rates)), 3)
        if tensor_rates else None,
        "bytes_cpu_ms_per_image": round(statistics.median(byte_cpu_ms), 3),
        "views": views,
    }
    if run_baseline is not None:
        result.update({
            "baseline_p50_ms": round(float(np.percentile(baseline_latencies, 50)), 3),
            "baseline_cpu_ms_per_image": round(statistics.median(baseline_cpu_ms), 3),
            "baseline_cost_ratio": round(statistics.median(baseline_ratios), 3)})
        print(f"median cost against the baseline: x{result['baseline_cost_ratio']:.3f} "
              f"({result['bytes_cpu_ms_per_image']:.2f} vs "
              f"{result['baseline_cpu_ms_per_image']:.2f} CPU ms per image)")
    json_result.emit(result, args.json_out)


if __name__ == "__main__":
    main()
