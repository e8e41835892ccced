"""A run's callbacks: which, in what order, what they keep, and the CPU budget."""

import dataclasses

import keras
import numpy as np
import pytest

from trainer import callbacks as callbacks_lib
from trainer import optim


def test_cpu_budget_counts_earlier_runs_and_stops_before_overrunning():
    class Model:
        stop_training = False

    budget = callbacks_lib.CpuBudget(100.0, used=60.0, epochs=3)  # 20 s an epoch so far.
    budget.set_model(Model())
    budget.on_epoch_end(3, {"epoch_cpu_seconds": 20.0})  # 80 used; one more -> 100: fits.
    assert not budget.model.stop_training
    budget.on_epoch_end(4, {"epoch_cpu_seconds": 20.0})  # 100 used; one more would overrun.
    assert budget.model.stop_training


def test_callbacks_follow_the_settings(tmp_path):
    options = dict(phase=0, select_by="val_accuracy", validation=True)

    def kinds(**more):
        return [type(c).__name__ for c in callbacks_lib.create_callbacks(
            str(tmp_path), **options, **more)]

    plain = kinds(cpu_budget_seconds=0.0, early_stopping_patience=0)
    assert plain == ["BackupAndRestore", "EpochTimer", "ModelCheckpoint", "CSVLogger",
                     "TensorBoard"]
    limited = callbacks_lib.create_callbacks(str(tmp_path), **options,
                                             cpu_budget_seconds=100.0, early_stopping_patience=3)
    budget, stopping = limited[-2:]
    assert isinstance(budget, callbacks_lib.CpuBudget) and budget.budget == 100.0
    assert isinstance(stopping, keras.callbacks.EarlyStopping) and stopping.patience == 3


@pytest.mark.parametrize("select_by, validation, monitor, best_only, resumed_best", [
    ("val_accuracy", True, "val_accuracy", True, 0.6),
    ("val_loss", True, "val_loss", True, 0.9),
    ("last", True, "val_accuracy", False, 0.6),
    ("val_loss", False, "loss", True, 1.2),
])
def test_select_by_sets_what_the_checkpoint_keeps(tmp_path, select_by, validation, monitor,
                                                  best_only, resumed_best):
    # An interrupted run's metrics.csv: the resumed checkpoint starts from its best value.
    (tmp_path / callbacks_lib.METRICS_CSV).write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        "0,0.3,2.0,0.4,1.5\n1,0.5,1.2,0.6,1.1\n2,0.4,1.4,0.5,0.9\n")
    callbacks = callbacks_lib.create_callbacks(
        str(tmp_path), phase=0, select_by=select_by, validation=validation,
        cpu_budget_seconds=0.0, early_stopping_patience=2)
    checkpoint = next(c for c in callbacks if isinstance(c, keras.callbacks.ModelCheckpoint))
    stopping = callbacks[-1]
    assert checkpoint.monitor == stopping.monitor == monitor
    assert checkpoint.save_best_only is best_only
    assert checkpoint.best == pytest.approx(resumed_best)
    # Lower is better for a loss, higher for an accuracy.
    assert checkpoint.mode == stopping.mode == ("min" if monitor.endswith("loss") else "max")
    with pytest.raises(ValueError, match="select_by"):
        callbacks_lib.selection("best", validation=True)


def test_ema_weights_are_validated_and_kept_while_the_backup_keeps_the_raw_ones(tmp_path):
    steps, epochs = 4, 3
    config = optim.OptimizerConfig(ema_epochs=0.5, warmup_epochs=0, schedule="constant")
    momentum = optim.ema_momentum(config, steps)
    assert momentum == pytest.approx(0.5)  # 1 - 1 / (0.5 x 4).
    assert optim.ema_momentum(dataclasses.replace(config, ema_epochs=0.0), steps) is None

    def dense():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    class RawWeights(keras.callbacks.Callback):  # The trained weights after every step.
        seen = []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(self.model.layers[0].get_weights())

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4 * steps, 3)), rng.integers(0, 2, 4 * steps)
    model = dense()
    model.compile(optimizer=optim.create_optimizer(config, 0.1, steps_per_epoch=steps),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.5)
    callbacks = callbacks_lib.create_callbacks(
        str(tmp_path), phase=0, select_by="last", validation=True, cpu_budget_seconds=0.0,
        early_stopping_patience=0, ema=True)
    assert [type(c).__name__ for c in callbacks][:4] == [
        "BackupAndRestore", "EpochTimer", "SwapEMAWeights", "ModelCheckpoint"]
    model.fit(x, y, batch_size=4, epochs=epochs, validation_data=(x, y), shuffle=False,
              callbacks=callbacks + [RawWeights()], verbose=0)
    # The average as Keras defines it: the first step's weights, then m a + (1 - m) w.
    average = RawWeights.seen[0]
    for raw in RawWeights.seen[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, raw)]
    kept = dense()
    kept.load_weights(tmp_path / callbacks_lib.BEST_WEIGHTS)
    last_raw = RawWeights.seen[-1]
    for got, want, raw in zip(kept.layers[0].get_weights(), average, last_raw):
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert np.abs(got - raw).max() > 1e-3  # The average, not the last weights.
    # Validation scored the average: the kept weights' loss on the same data.
    kept.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logged = callbacks_lib.csv_rows(str(tmp_path / callbacks_lib.METRICS_CSV))
    assert float(logged[-1]["val_loss"]) == pytest.approx(kept.evaluate(x, y, verbose=0),
                                                          rel=1e-4)
    # The backup, saved before the swap, resumes from the raw weights.
    backup = next(tmp_path.glob(f"{callbacks_lib.BACKUP}/phase0/*.weights.h5"))
    resumed = dense()
    resumed.load_weights(backup)
    for got, raw in zip(resumed.layers[0].get_weights(), last_raw):
        np.testing.assert_allclose(got, raw, atol=1e-6)
