"""A tf.data service of separate processes: one dispatcher, any number of workers.

    python -m pipeline.data_service dispatcher --port=5050 --work_dir=/shared/dispatcher
    python -m pipeline.data_service worker --dispatcher=HOST:5050 --port=5051   # per machine
    python train.py ... --tf_data_service=grpc://HOST:5050

Everything of `create_split` before batching to the trainer (read shards,
decode, augment, batch) then runs on the workers, in `distributed_epoch` mode:
the dispatcher hands out the split's files to the workers, so each example is
read once per epoch. This is TensorFlow's own service
(`tf.data.experimental.service`); this module only starts its servers, with
the settings this project relies on:

* The dispatcher is fault tolerant: it journals its state in `--work_dir`
  before answering, so a restarted dispatcher (same port and work_dir) picks up
  the jobs and workers it had.
* A worker that dies mid-epoch stalls the trainer: TensorFlow's client keeps
  retrying that worker's task (measured here: still waiting after 150 s, with
  the dispatcher's `--worker_timeout_ms` long past). Started again at the same
  address (same host and `--port`), the worker takes its task back and the
  epoch goes on (the test kills a worker after the first epoch, restarts it,
  and the run ends with every epoch). So run workers under a supervisor that
  restarts them in place: systemd `Restart=always`, a Kubernetes StatefulSet
  (stable names), Slurm `--requeue`. A worker at a new address joins the
  jobs that start after it (the next epoch).
* The workers need the project installed (they run the pipeline's functions)
  and read the TFDS data directory themselves: give them the same `--data_dir`
  path (a shared file system, or GCS).

Each server logs its address and runs until stopped (SIGTERM or Ctrl-C).
"""

import signal
import sys
import threading

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 0, "Port to listen on (0: any free port, which is logged).",
                     lower_bound=0)
flags.DEFINE_string("work_dir", None, "dispatcher: where it journals its state (fault "
                    "tolerance); a directory every restart of the dispatcher sees.")
flags.DEFINE_integer("worker_timeout_ms", 10_000, "dispatcher: a worker silent this long is "
                     "taken off the list new jobs are given.", lower_bound=100)
flags.DEFINE_string("dispatcher", None, "worker: the dispatcher's HOST:PORT.")
flags.DEFINE_string("worker_address", None, "worker: HOST:%port% the dispatcher tells "
                    "trainers to reach this worker at (default: localhost:%port%).")

ROLES = ("dispatcher", "worker")


def start(role: str):
    """The started server (a DispatchServer or WorkerServer)."""
    import tensorflow as tf  # After the flags: --help answers without loading TensorFlow.

    service = tf.data.experimental.service
    if role == "dispatcher":
        if not FLAGS.work_dir:
            raise app.UsageError("dispatcher needs --work_dir (its journal, for fault tolerance)")
        return service.DispatchServer(service.DispatcherConfig(
            port=FLAGS.port, work_dir=FLAGS.work_dir, fault_tolerant_mode=True,
            worker_timeout_ms=FLAGS.worker_timeout_ms))
    if not FLAGS.dispatcher:
        raise app.UsageError("worker needs --dispatcher=HOST:PORT")
    return service.WorkerServer(service.WorkerConfig(
        dispatcher_address=FLAGS.dispatcher.removeprefix("grpc://"), port=FLAGS.port,
        **({"worker_address": FLAGS.worker_address} if FLAGS.worker_address else {})))


def main(argv):
    if len(argv) != 2 or argv[1] not in ROLES:
        raise app.UsageError(f"name the role: python -m pipeline.data_service {'|'.join(ROLES)} "
                             "[flags]")
    import artist_tfds  # noqa: F401  Workers run the pipeline's functions: register the builders.

    server = start(argv[1])
    # A worker has no public address; its `_address` is TensorFlow's own "localhost:PORT".
    address = server.target if argv[1] == "dispatcher" else server._address
    logging.info("tf.data service %s serving at %s", argv[1], address)
    print(f"{argv[1]} ready: {address}", flush=True)  # For scripts waiting on it.
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
