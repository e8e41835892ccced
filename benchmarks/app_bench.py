"""The web server under load vs the same SavedModel called in-process, on the same images.

    python -m benchmarks.app_bench --model_dir=WORKDIR/saved_model [--images='DIR/*/*.jpg']

Two paths, each driven by M concurrent clients (`--clients`) sending bounded
bursts of `--requests_per_client` requests of B images (`--batch_sizes`):

* server JSON: `POST /v1/models/<name>:predict` to `serve.py` on localhost,
  `{"signature_name": "serving_default", "instances": [{"b64": ...}, ...]}`, one
  keep-alive `http.client` connection per client thread. The bodies are built
  and base64-encoded before timing: the server's JSON parsing, base64
  decoding, batching and answering are what is measured. By default the
  script starts `serve.py` itself on a free port and stops it at the end;
  `--server=URL` measures a server already running (no CPU figures then).
* in-process: `serving_default(images=tf.constant(batch))` in this process on
  the same batches of bytes, M threads calling at once, every output fetched
  as numpy (as the server's worker threads do).

Both processes share the machine's cores, so while the server is timed this
process only sends prebuilt bodies and stores the answers (they are checked
after the burst), and the two paths alternate burst by burst, in turns
(`--rounds`), so that load from other processes hits both alike. Images/s are
medians over rounds, the ratio the median of the per-round ratios; latencies
are pooled over rounds. CPU ms per image count the server process only
(from /proc) against this process for the in-process path: steadier than
wall time when other processes load the machine. Neither process tunes
malloc unless `GLIBC_TUNABLES` is set, which both then inherit.

Targets (printed PASS/FAIL, not asserted): the server's batch-32 images/s at
least 0.8 of in-process; the p95 latency of the server's single-image requests
at most 3x their p50 with the most clients measured (8 by default).

Last, in-process at batch `--cost_batch_size`, the cost per image of
`serving_default`, `explain`, `similar` and `panel` (the ones the model has),
and what each adds over `serving_default`.

Images come from `--images` (a folder, searched recursively, or a glob;
`--num_images` of them, evenly spaced in sorted order), else synthetic JPEGs
of 300-800 px. The last line printed is one JSON object, also written to
`--json_out`: {"rows": [...], "ratios": [...], "targets": [...],
"signature_costs": {...}, ...}.
"""

import base64
import glob
import http.client
import io
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks import json_result

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "Exported SavedModel directory (WORKDIR/saved_model).")
flags.DEFINE_string("images", None, "Folder (searched recursively) or glob of images to send; "
                    "default: synthetic JPEGs of 300-800 px.")
flags.DEFINE_integer("num_images", 64, "Distinct images, evenly spaced over --images.",
                     lower_bound=1)
flags.DEFINE_list("clients", ["1", "8"], "Concurrent clients (threads) per burst.")
flags.DEFINE_list("batch_sizes", ["1", "32"], "Images per request.")
flags.DEFINE_integer("requests_per_client", 16, "Requests each client sends per burst.",
                     lower_bound=1)
flags.DEFINE_float("max_burst_seconds", 8.0, "Clients send nothing new after this long "
                   "(each burst is bounded in requests and in time).", lower_bound=0.1)
flags.DEFINE_integer("rounds", 5, "Rounds; each runs every (batch, clients) burst on both "
                     "paths, alternating which goes first.", lower_bound=1)
flags.DEFINE_string("server", None, "URL of a running server (http://host:port); default: "
                    "start serve.py on a free localhost port with --model_dir.")
flags.DEFINE_string("model_name", "artist", "The model's name in the URLs.")
flags.DEFINE_string("serve_args", "", "Extra flags for the serve.py this script starts, "
                    "e.g. '--max_batch=32'.")
flags.DEFINE_float("server_start_seconds", 300, "How long to wait for the server to answer.")
flags.DEFINE_list("cost_signatures", ["serving_default", "explain", "similar", "panel"],
                  "Signatures whose cost per image is measured in-process ([] to skip).")
flags.DEFINE_integer("cost_batch_size", 32, "Batch size of the signature cost measurement.",
                     lower_bound=1)
flags.DEFINE_integer("cost_calls", 3, "Calls per signature per round.", lower_bound=1)
flags.DEFINE_string("json_out", None, "Also write the result JSON to this file.")
flags.mark_flag_as_required("model_dir")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
SIGNATURE = "serving_default"
SERVER, IN_PROCESS = "server JSON", "in-process"
TARGET_RATIO = 0.8  # Server batch-32 images/s over in-process images/s, at least.
TARGET_BATCH = 32
TARGET_TAIL = 3.0  # p95 / p50 of single-image server requests, at most.
WARMUP_REQUESTS = 2  # Per client, per path and (batch, clients), before any timing.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- Images and request bodies --------------------------------------------------------


def synthetic_images(count: int, *, seed: int = 0) -> list[bytes]:
    """JPEGs of 300-800 px a side: smooth colour fields plus grain, like photographed paint."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(300, 801, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        blobs.append(buffer.getvalue())
    return blobs


def image_paths(pattern: str) -> list[str]:
    if os.path.isdir(pattern):
        paths = [os.path.join(root, name) for root, _, names in os.walk(pattern) for name in names]
    else:
        paths = glob.glob(pattern, recursive=True)
    return sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS))


def load_images(pattern: str | None, count: int) -> list[bytes]:
    """`count` encoded images: evenly spaced over the sorted matches, else synthetic."""
    if not pattern:
        return synthetic_images(count)
    paths = image_paths(pattern)
    if not paths:
        raise app.UsageError(f"no images match --images={pattern}")
    step = max(1, len(paths) / count)
    chosen = [paths[int(i * step)] for i in range(min(count, len(paths)))]
    blobs = []
    for path in chosen:
        with open(path, "rb") as f:
            blobs.append(f.read())
    return blobs


def batches_of(blobs: list[bytes], size: int) -> list[list[bytes]]:
    """Consecutive groups of `size` images, wrapping around when there are fewer."""
    count = max(1, len(blobs) // size)
    return [[blobs[(k * size + j) % len(blobs)] for j in range(size)] for k in range(count)]


def predict_body(batch: list[bytes]) -> bytes:
    return json.dumps({"signature_name": SIGNATURE, "instances": [
        {"b64": base64.b64encode(blob).decode("ascii")} for blob in batch]}).encode()


# --- Bursts ---------------------------------------------------------------------------


def run_burst(connect, payloads: list[list], *, max_seconds: float) -> dict:
    """Each client (thread) sends its payloads one after another; all start together.

    `connect()` runs in the client's thread before the start and returns
    `send(payload) -> answer`. Returns the answers, per-request latencies (s),
    the burst's wall time from the first request to the last answer, and this
    process' CPU seconds over the burst.
    """
    clients = len(payloads)
    barrier = threading.Barrier(clients + 1)
    answers, latencies, spans, failures = ([] for _ in range(4))
    lock = threading.Lock()

    def client(mine: list) -> None:
        try:
            send = connect()
        except Exception as e:  # noqa: BLE001  Raised after the burst.
            failures.append(e)
            barrier.abort()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            return
        done, times, first = [], [], time.perf_counter()
        deadline = first + max_seconds
        try:
            for payload in mine:
                start = time.perf_counter()
                if start > deadline:
                    break
                done.append(send(payload))
                times.append(time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001  Raised after the burst.
            failures.append(e)
        with lock:
            answers.extend(done)
            latencies.extend(times)
            spans.append((first, time.perf_counter()))

    threads = [threading.Thread(target=client, args=(mine,)) for mine in payloads]
    for thread in threads:
        thread.start()
    cpu = time.process_time()
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return {"answers": answers, "latencies": latencies, "wall": wall,
            "cpu": time.process_time() - cpu}


def spread(batches: list, *, clients: int, requests: int) -> list[list]:
    """Client c's r-th request is batch (c + r * clients): every client sends other images."""
    return [[batches[(c + r * clients) % len(batches)] for r in range(requests)]
            for c in range(clients)]


def http_sender(url: str, path: str):
    """A `connect` for run_burst: a keep-alive connection; answers are (status, body)."""
    parts = urllib.parse.urlsplit(url)

    def connect():
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=600)
        connection.connect()

        def send(body: bytes):
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()

        return send

    return connect


def answered_by_server(answers: list, batch: int) -> tuple[int, int]:
    """(images answered, failed requests) of a server burst: checked after timing."""
    images = errors = 0
    for status, body in answers:
        predictions = json.loads(body).get("predictions") if status == 200 else None
        if isinstance(predictions, list) and len(predictions) == batch:
            images += batch
        else:
            errors += 1
    return images, errors


def in_process_sender(signature):
    import tensorflow as tf

    def connect():
        def send(batch: list[bytes]):
            outputs = signature(images=tf.constant(batch))
            return {name: tensor.numpy() for name, tensor in outputs.items()}
        return send
    return connect


def answered_in_process(answers: list, batch: int) -> tuple[int, int]:
    images = sum(len(outputs["probabilities"]) for outputs in answers)
    return images, sum(len(outputs["probabilities"]) != batch for outputs in answers)


# --- The server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_ready(url: str, model_name: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", f"/v1/models/{model_name}")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def start_server(model_dir: str, model_name: str, log_path: str,
                 extra_args: list[str]) -> tuple[subprocess.Popen, str]:
    """serve.py in a subprocess on a free port, once it answers; (process, URL)."""
    port = free_port()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "serve.py"), f"--model_dir={model_dir}",
             f"--port={port}", f"--model_name={model_name}", *extra_args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


def wait_for_server(process: subprocess.Popen | None, url: str, model_name: str,
                    log_path: str | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not server_ready(url, model_name):
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"serve.py exited with {process.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer from {url} after {timeout:.0f} s\n{tail(log_path)}")
        time.sleep(0.25)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def tail(path: str | None, lines: int = 30) -> str:
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (Linux /proc), None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15).


# --- Measurement ----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def measure(paths: dict, configs: list[tuple[int, int]], *, rounds: int, requests: int,
            max_seconds: float, server_pid: int | None, label: str = "round") -> dict:
    """Every (batch, clients) burst on every path, `rounds` times, alternating the order.

    `paths`: name -> (connect, batches by size, check(answers, batch)).
    Returns {(path, batch, clients): [one dict per round]}.
    """
    results = {(path, b, m): [] for path in paths for b, m in configs}
    for round_ in range(rounds):
        order = list(paths) if round_ % 2 == 0 else list(paths)[::-1]
        for batch, clients in configs:
            for path in order:
                connect, batches, check = paths[path]
                server_cpu = process_cpu_seconds(server_pid) if path == SERVER else None
                burst = run_burst(connect, spread(batches[batch], clients=clients,
                                                  requests=requests), max_seconds=max_seconds)
                if server_cpu is not None:
                    server_cpu = process_cpu_seconds(server_pid) - server_cpu
                images, errors = check(burst["answers"], batch)
                results[path, batch, clients].append({
                    "images_sent": len(burst["answers"]) * batch, "images_answered": images,
                    "errors": errors, "latencies": burst["latencies"],
                    "images_per_s": images / burst["wall"],
                    # The serving process' CPU: the server's own, or this one's in-process.
                    "cpu": burst["cpu"] if path == IN_PROCESS else server_cpu,
                    "client_cpu": burst["cpu"] if path == SERVER else None})
            print(f"   {label} {round_ + 1}, batch {batch}, {clients} clients: " + ", ".join(
                f"{path} {results[path, batch, clients][-1]['images_per_s']:.1f} images/s"
                for path in paths), flush=True)
    return results


def summarise(results: dict) -> list[dict]:
    rows = []
    for (path, batch, clients), runs in results.items():
        latencies = [1000 * t for run in runs for t in run["latencies"]]
        images = sum(run["images_answered"] for run in runs)
        row = {"path": path, "batch": batch, "clients": clients,
               "requests": len(latencies),
               "images_sent": sum(run["images_sent"] for run in runs),
               "images_answered": images, "errors": sum(run["errors"] for run in runs),
               "images_per_s": round(statistics.median(r["images_per_s"] for r in runs), 1),
               "p50_ms": round(percentile(latencies, 50), 2),
               "p95_ms": round(percentile(latencies, 95), 2)}
        row["p95_over_p50"] = round(row["p95_ms"] / row["p50_ms"], 2)
        cpu = [run["cpu"] for run in runs]
        row["cpu_ms_per_image"] = (round(1000 * sum(cpu) / images, 2)
                                   if images and None not in cpu else None)
        if path == SERVER:
            row["client_cpu_ms_per_image"] = round(
                1000 * sum(run["client_cpu"] for run in runs) / max(images, 1), 2)
        rows.append(row)
    return rows


def ratios(results: dict, configs: list[tuple[int, int]]) -> list[dict]:
    """Server over in-process, per (batch, clients): median of per-round images/s ratios."""
    out = []
    for batch, clients in configs:
        server, local = results[SERVER, batch, clients], results[IN_PROCESS, batch, clients]
        entry = {"batch": batch, "clients": clients, "images_per_s_ratio": round(
            statistics.median(s["images_per_s"] / i["images_per_s"]
                              for s, i in zip(server, local)), 3)}
        server_cpu = [run["cpu"] for run in server]
        if None not in server_cpu:
            # Images per CPU second, server over in-process.
            per_image = [sum(r["cpu"] for r in runs)
                         / max(1, sum(r["images_answered"] for r in runs))
                         for runs in (server, local)]
            entry["cpu_ratio"] = round(per_image[1] / per_image[0], 3)
        out.append(entry)
    return out


def targets(rows: list[dict], ratio_rows: list[dict], clients: list[int]) -> list[dict]:
    out = []
    for entry in ratio_rows:
        if entry["batch"] == TARGET_BATCH:
            out.append({"target": f"server batch-{TARGET_BATCH} images/s >= {TARGET_RATIO} x "
                                  f"in-process ({entry['clients']} clients)",
                        "value": entry["images_per_s_ratio"], "limit": TARGET_RATIO,
                        "pass": entry["images_per_s_ratio"] >= TARGET_RATIO})
    most = max(clients)
    for row in rows:
        if row["path"] == SERVER and row["batch"] == 1 and row["clients"] == most:
            out.append({"target": f"server single-image p95 <= {TARGET_TAIL} x p50 "
                                  f"({most} clients)",
                        "value": row["p95_over_p50"], "limit": TARGET_TAIL,
                        "pass": row["p95_over_p50"] <= TARGET_TAIL})
    return out


def signature_costs(loaded, blobs: list[bytes], names: list[str], *, batch_size: int,
                    calls: int, rounds: int) -> dict:
    """In-process ms per image of each signature at one batch size, round-robin over rounds."""
    import tensorflow as tf

    present = [name for name in names if name in loaded.signatures]
    for name in names:
        if name not in present:
            print(f"   {name}: not in this model, skipped", flush=True)
    batches = [tf.constant(batch) for batch in batches_of(blobs, batch_size)]
    functions = {name: loaded.signatures[name] for name in present}

    def run(name: str, batch) -> None:
        for tensor in functions[name](images=batch).values():
            tensor.numpy()

    for name in present:  # Warm-up.
        run(name, batches[0])
    seconds = {name: [] for name in present}
    for _ in range(rounds):
        for name in present:
            start = time.perf_counter()
            for i in range(calls):
                run(name, batches[i % len(batches)])
            seconds[name].append((time.perf_counter() - start) / (calls * batch_size))
    costs = {name: {"ms_per_image": round(1000 * statistics.median(s), 3)}
             for name, s in seconds.items()}
    base = seconds.get(SIGNATURE)
    for name, cost in costs.items():
        if base and name != SIGNATURE:
            extra = [s - b for s, b in zip(seconds[name], base)]
            cost["extra_ms_per_image"] = round(1000 * statistics.median(extra), 3)
            cost["ratio"] = round(statistics.median(
                s / b for s, b in zip(seconds[name], base)), 2)
    return costs


# --- Report ---------------------------------------------------------------------------


def print_report(rows, ratio_rows, target_rows, costs) -> None:
    print(f"\n{'path':<12} {'batch':>5} {'clients':>7} {'images/s':>9} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'p95/p50':>7} {'CPU ms/img':>10} {'errors':>6}")
    for row in sorted(rows, key=lambda r: (r["batch"], r["clients"], r["path"] != SERVER)):
        cpu = "-" if row["cpu_ms_per_image"] is None else f"{row['cpu_ms_per_image']:.2f}"
        print(f"{row['path']:<12} {row['batch']:>5} {row['clients']:>7} "
              f"{row['images_per_s']:>9.1f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
              f"{row['p95_over_p50']:>7.2f} {cpu:>10} {row['errors']:>6}")
    print("\nserver / in-process (median of per-round ratios):")
    for entry in ratio_rows:
        cpu = (f", per CPU second {entry['cpu_ratio']:.3f}" if "cpu_ratio" in entry else "")
        print(f"   batch {entry['batch']:>2}, {entry['clients']} clients: images/s "
              f"{entry['images_per_s_ratio']:.3f}{cpu}")
    print("\ntargets:")
    for entry in target_rows:
        print(f"   {'PASS' if entry['pass'] else 'FAIL'}  {entry['target']}: {entry['value']}")
    if costs:
        print(f"\nin-process, batch {FLAGS.cost_batch_size}, ms per image:")
        for name, cost in costs.items():
            extra = (f"  ({cost['extra_ms_per_image']:+.2f} ms over {SIGNATURE}, "
                     f"x{cost['ratio']:.2f})" if "ratio" in cost else "")
            print(f"   {name:<16} {cost['ms_per_image']:7.2f}{extra}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    import numpy as np
    import tensorflow as tf

    batch_sizes = sorted(int(b) for b in FLAGS.batch_sizes)
    clients = sorted(int(m) for m in FLAGS.clients)
    configs = [(b, m) for b in batch_sizes for m in clients]
    blobs = load_images(FLAGS.images, FLAGS.num_images)
    print(f"{len(blobs)} images from {FLAGS.images or 'synthetic JPEGs'}, "
          f"{np.mean([len(b) for b in blobs]) / 1024:.1f} KiB on average", flush=True)
    # Everything sent is built now, before any timing.
    batches = {b: batches_of(blobs, b) for b in batch_sizes}
    bodies = {b: [predict_body(batch) for batch in batches[b]] for b in batch_sizes}

    with tempfile.TemporaryDirectory() as tmp:
        process, log_path, url = None, None, FLAGS.server
        if not url:
            log_path = os.path.join(tmp, "serve.log")
            process, url = start_server(FLAGS.model_dir, FLAGS.model_name, log_path,
                                        shlex.split(FLAGS.serve_args))
        try:
            loaded = tf.saved_model.load(FLAGS.model_dir)  # While the server starts.
            wait_for_server(process, url, FLAGS.model_name, log_path, FLAGS.server_start_seconds)
            print(f"server at {url}" + (f" (pid {process.pid})" if process else ""), flush=True)
            paths = {
                SERVER: (http_sender(url, f"/v1/models/{FLAGS.model_name}:predict"), bodies,
                         answered_by_server),
                IN_PROCESS: (in_process_sender(loaded.signatures[SIGNATURE]), batches,
                             answered_in_process),
            }
            pid = process.pid if process else None
            # Warm-up: tracing, graph optimisation, thread pools, the batch shapes to come.
            measure(paths, configs, rounds=1, requests=WARMUP_REQUESTS,
                    max_seconds=FLAGS.max_burst_seconds, server_pid=pid, label="warm-up")
            results = measure(paths, configs, rounds=FLAGS.rounds,
                              requests=FLAGS.requests_per_client,
                              max_seconds=FLAGS.max_burst_seconds, server_pid=pid)
        except Exception:
            print(tail(log_path), file=sys.stderr)
            raise
        finally:
            if process is not None:
                stop_server(process)

    rows = summarise(results)
    ratio_rows = ratios(results, configs)
    target_rows = targets(rows, ratio_rows, clients)
    costs = signature_costs(loaded, blobs, FLAGS.cost_signatures,
                            batch_size=FLAGS.cost_batch_size, calls=FLAGS.cost_calls,
                            rounds=FLAGS.rounds) if FLAGS.cost_signatures else {}
    print_report(rows, ratio_rows, target_rows, costs)
    result = {"images": len(blobs), "image_kib_mean": round(np.mean([len(b) for b in blobs])
                                                              / 1024, 1),
              "rounds": FLAGS.rounds, "requests_per_client": FLAGS.requests_per_client,
              "rows": rows, "ratios": ratio_rows, "targets": target_rows,
              "signature_costs": costs}
    json_result.emit(result, FLAGS.json_out)


if __name__ == "__main__":
    app.run(main)
