"""The training plan both paths follow: phases, their optimizers, callbacks and input."""

import pytest

from tests.conftest import tiny_config
from trainer import phases


def test_a_backbone_trains_its_head_then_everything_at_a_lower_rate(tiny_data_dir):
    config = tiny_config(tiny_data_dir, model="backbone", backbone="mobilenetv3small",
                         weights="imagenet", freeze_epochs=2, epochs=5, learning_rate=1e-3,
                         fine_tune_learning_rate_factor=0.3)
    assert phases.plan(config) == [
        phases.Phase(index=0, start=0, end=2, backbone_trainable=False, learning_rate=1e-3),
        phases.Phase(index=1, start=2, end=5, backbone_trainable=True,
                     learning_rate=pytest.approx(3e-4))]


def test_without_freezing_one_phase_trains_everything(tiny_data_dir):
    config = tiny_config(tiny_data_dir, epochs=4, learning_rate=2e-3)
    assert phases.plan(config) == [phases.Phase(0, 0, 4, True, 2e-3)]


def test_only_the_first_phase_warms_up(tiny_data_dir):
    config = tiny_config(tiny_data_dir, model="backbone", backbone="mobilenetv3small",
                         weights="imagenet", freeze_epochs=2, epochs=5, warmup_epochs=1,
                         learning_rate=1e-3, fine_tune_learning_rate_factor=0.5)
    first, second = phases.plan(config)
    warm = phases.create_optimizer(config, first, steps_per_epoch=10)
    fine = phases.create_optimizer(config, second, steps_per_epoch=10)
    # Warm-up from 1/100 of the peak over 10 steps; the second phase starts at its peak.
    assert float(warm.learning_rate) == pytest.approx(1e-5)
    assert float(fine.learning_rate) == pytest.approx(5e-4)
    warm.iterations.assign(10)
    assert float(warm.learning_rate) == pytest.approx(1e-3)


def test_callbacks_and_input_take_the_run_settings(tiny_data_dir, tmp_path):
    config = tiny_config(tiny_data_dir, cpu_budget_seconds=60.0, early_stopping_patience=2,
                         label_smoothing=0.1, seed=4, deterministic=True)
    callbacks = phases.create_callbacks(config, str(tmp_path), phases.plan(config)[0],
                                        validation=True)
    budget, stopping = callbacks[-2:]
    assert budget.budget == 60.0 and stopping.patience == 2
    assert phases.input_options(config) == {"seed": 4, "deterministic": True, "one_hot": True}
