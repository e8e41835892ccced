"""Keras callbacks of a run: resume, best checkpoint, metrics.csv, TensorBoard, budgets.

metrics.csv is the run's memory across interruptions: the best value so
far, the epochs done and what they cost are read back from it on resume.
"""

import csv
import os
import time

import keras
from absl import logging

from trainer import report

BACKUP = "backup"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
METRICS_CSV = "metrics.csv"


def csv_rows(metrics_csv: str) -> list[dict]:
    if not os.path.exists(metrics_csv):
        return []
    with open(metrics_csv, encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --select_by: which epoch's weights a run keeps (`selection`).
SELECTIONS = ("val_accuracy", "val_loss", "last")


def selection(select_by: str, *, validation: bool) -> tuple[str, str]:
    """(monitor, mode) of the best checkpoint and early stopping for `--select_by`.

    `last` keeps every epoch's weights in turn (the final ones stay); its early
    stopping watches validation accuracy. Without a validation split, the
    training figures stand in.
    """
    if select_by not in SELECTIONS:
        raise ValueError(f"select_by must be one of {SELECTIONS}, got {select_by!r}")
    metric = "loss" if select_by == "val_loss" else "accuracy"
    return ("val_" if validation else "") + metric, "min" if metric == "loss" else "max"


def best_so_far(metrics_csv: str, monitor: str, mode: str = "max") -> float | None:
    """Best `monitor` value logged before an interruption, so resuming keeps it."""
    values = [v for row in csv_rows(metrics_csv)
              if (v := report.csv_number(row.get(monitor))) is not None]
    return (min if mode == "min" else max)(values, default=None)


def epoch_costs(metrics_csv: str) -> dict:
    """Seconds and CPU seconds of every epoch logged so far, across interruptions."""
    rows = csv_rows(metrics_csv)

    def total(column: str) -> float:
        return round(sum(report.csv_number(row.get(column)) or 0.0 for row in rows), 1)

    return {"train_seconds": total("epoch_seconds"),
            "train_cpu_seconds": total("epoch_cpu_seconds")}


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` and `epoch_cpu_seconds` to the logs: metrics.csv says what each
    epoch cost, and a resumed run still knows what the epochs before the interruption cost.

    CPU time counts all threads of this process; an epoch includes its validation pass.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start
            logs["epoch_cpu_seconds"] = time.process_time() - self._cpu_start


class CpuBudget(keras.callbacks.Callback):
    """Stops at an epoch end when one more epoch would overrun a CPU-time budget.

    CPU time (all threads of this process, as `EpochTimer` logs it, which must
    run first), not wall time: on a shared machine it measures the work done,
    not how busy the neighbours are. `used` is what earlier runs of this work
    directory spent (a resumed run keeps its budget).
    """

    def __init__(self, budget_seconds: float, *, used: float = 0.0, epochs: int = 0):
        super().__init__()
        self.budget, self.used, self.epochs = budget_seconds, used, epochs

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        self.used += (logs or {}).get("epoch_cpu_seconds", 0.0)
        if self.used + self.used / self.epochs > self.budget:
            logging.info("CPU budget: %.0f s used of %.0f s; stopping", self.used, self.budget)
            self.model.stop_training = True


def create_callbacks(workdir: str, *, phase: int, select_by: str, validation: bool,
                     cpu_budget_seconds: float, early_stopping_patience: int,
                     ema: bool = False) -> list[keras.callbacks.Callback]:
    """The run's callbacks, in the order they act at an epoch's end. With `ema` (the
    optimizer keeps a weight average), validation and the kept checkpoint use the
    average, and the backup, saved before the swap, keeps the raw weights to resume."""
    metrics_csv = os.path.join(workdir, METRICS_CSV)
    monitor, mode = selection(select_by, validation=validation)
    callbacks = [
        # Restores weights, optimizer state and epoch after an interruption (even
        # SIGKILL: a half-written backup falls back to the previous one). Kept
        # after `fit`, so a crash during export or evaluation does not retrain.
        keras.callbacks.BackupAndRestore(os.path.join(workdir, BACKUP, f"phase{phase}"),
                                         delete_checkpoint=False, double_checkpoint=True),
        EpochTimer(),
        *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),
        keras.callbacks.ModelCheckpoint(
            os.path.join(workdir, BEST_WEIGHTS), monitor=monitor, mode=mode,
            save_best_only=select_by != "last", save_weights_only=True,
            initial_value_threshold=best_so_far(metrics_csv, monitor, mode)),
        keras.callbacks.CSVLogger(metrics_csv, append=True),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]
    if cpu_budget_seconds:
        callbacks.append(CpuBudget(cpu_budget_seconds,
                                   used=epoch_costs(metrics_csv)["train_cpu_seconds"],
                                   epochs=len(csv_rows(metrics_csv))))
    if early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=early_stopping_patience))
    return callbacks
