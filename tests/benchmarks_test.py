"""Smoke runs of the benchmark scripts on tiny inputs, so that none of them rots unseen.

Their figures mean nothing at this size and nothing here is timed: each run
must finish and end with its documented JSON line, with positive figures.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def benchmark(script: str) -> list[str]:
    """The command that runs benchmarks/`script`, as its docstring says: a module of the
    `benchmarks` package, from the repository's top."""
    return [sys.executable, "-m", f"benchmarks.{os.path.splitext(script)[0]}"]


def last_json(script: str, *flags: str) -> dict:
    result = subprocess.run([*benchmark(script), *flags], env=ENV, cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_results_file(path, printed: dict, script: str) -> None:
    """--json_out holds the printed result with the command that made it, its commit and
    machine (what tools/results.py builds tables from)."""
    document = json.loads(path.read_text())
    assert document["result"] == printed
    assert document["benchmark"] == os.path.splitext(script)[0]
    assert document["command"].startswith(f"python -m benchmarks.{document['benchmark']} ")
    assert f"--json_out={path}" in document["command"]
    assert document["machine"]["cores"] >= 1 and document["machine"]["python"]
    assert document["commit"] is None or len(document["commit"].split("+")[0]) == 12


def test_build_bench(tmp_path):
    figures = last_json("build_bench.py", "--num_images=24", "--width=160", "--height=120",
                        "--artists=3", "--repeats=1", f"--workdir={tmp_path}")
    assert list(figures) == ["builder_images_per_s", "pillow_loop_images_per_s", "ratio"]
    assert all(value > 0 for value in figures.values())


def test_pipeline_bench(tiny_data_dir):
    figures = last_json("pipeline_bench.py", "--dataset=sample_paintings/tiny",
                        f"--data_dir={tiny_data_dir}", "--stages=bcd", "--image_size=32",
                        "--batch_size=6", "--images=12", "--rounds=1", "--memory_epochs=1")
    assert {"b", "c", "d", "first_batch_s", "d_over_c", "cpu_d_over_c"} <= set(figures)
    assert all(figures[key] > 0 for key in ("b", "c", "d", "d_over_c"))


def test_model_speed():
    figures = last_json("model_speed.py", "--models=seed_cnn,resnet_small", "--image_sizes=32",
                        "--num_classes=3", "--batch_size=4", "--rounds=1", "--steps=1")
    assert set(figures) == {"seed_cnn@32", "resnet_small@32"}
    for case in figures.values():
        assert case["params"] > 0 and case["train_images_per_s"] > 0
        assert case["infer_images_per_s"] > 0


def test_recipe_compare(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for artist in range(3):  # 90 noisy paintings in three palettes: batches of 16 to train on.
        folder = tmp_path / "source" / f"Artist_{artist}"
        folder.mkdir(parents=True)
        palette = np.array([60 * artist + 40, 200 - 50 * artist, 90 + 40 * artist], np.float32)
        for i in range(30):
            pixels = np.clip(palette + rng.normal(0, 40, (64, 80, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    command = ["recipe_compare.py", f"--source_dir={tmp_path / 'source'}",
               f"--workdir={tmp_path / 'work'}", "--original_epochs=1",
               # The plumbing, not the recipes: the small CNN for every run, no gallery.
               "--max_default_epochs=2",
               "--set=image_size=32,batch_size=16,model=seed_cnn,weights=none,freeze_epochs=0,"
               "gallery_per_artist=0,eval_scale=0",
               "--ablations=bn_momentum=0.9,test_flips=true", "--seeds=2"]
    figures = last_json(*command)
    assert set(figures) == {"original", "default", "default+bn_momentum=0.9",
                            "default+test_flips=true"}
    for variant in figures.values():
        assert len(variant["runs"]) == 2  # One per seed.
        accuracies = [run["test_accuracy"] for run in variant["runs"]]
        assert variant["test_accuracy"] == pytest.approx(sum(accuracies) / 2, abs=1e-4)
        for run in variant["runs"]:
            assert 0 <= run["test_accuracy"] <= 1 and run["epochs"] >= 1
            assert run["seconds"] > 0 and run["cpu_seconds"] > 0
    assert figures["original"]["gain"] == 0
    config = json.loads((tmp_path / "work" / "default+bn_momentum_0.9" / "seed1" /
                         "config.json").read_text())
    assert config["model"]["bn_momentum"] == 0.9 and config["run"]["seed"] == 1
    # The ablation leaves the step cost alone: it trains its base's epochs.
    base = json.loads((tmp_path / "work" / "default" / "seed1" / "config.json").read_text())
    assert config["training"]["epochs"] == base["training"]["epochs"]
    # Views alone train nothing: the base run's own epochs and weights, other views.
    work = tmp_path / "work"
    for seed in ("seed0", "seed1"):
        flipped, base_dir = work / "default+test_flips_true" / seed, work / "default" / seed
        recorded = json.loads((base_dir / "config.json").read_text())
        assert json.loads((flipped / "config.json").read_text()) == {
            **recorded, "data": {**recorded["data"], "test_flips": True}}
        assert (flipped / "metrics.csv").read_text() == (base_dir / "metrics.csv").read_text()
        assert ((flipped / "checkpoints" / "best.weights.h5").read_bytes()
                == (base_dir / "checkpoints" / "best.weights.h5").read_bytes())
    assert ([run["cpu_seconds"] for run in figures["default+test_flips=true"]["runs"]]
            == [run["cpu_seconds"] for run in figures["default"]["runs"]])
    assert last_json(*command) == figures  # A rerun reuses every finished run.


def test_recipe_compare_subsample_links_a_seeded_small_collection(tmp_path):
    from absl import app

    from benchmarks import recipe_compare

    source = tmp_path / "source"
    for artist, count in {"Ann": 5, "Bob": 6, "Cid": 7, "Dee": 3}.items():
        (source / artist).mkdir(parents=True)
        for i in range(count):
            (source / artist / f"{i}.jpg").write_bytes(b"%d" % i)
    (source / "artists.csv").write_text("name\n")

    def linked(target, seed):
        recipe_compare.subsample(str(source), str(target), artists=2, paintings=5, seed=seed)
        return sorted(str(p.relative_to(target)) for p in target.glob("*/*.jpg"))

    first = linked(tmp_path / "a", seed=0)
    folders = {name.split("/")[0] for name in first}
    assert len(first) == 10 and len(folders) == 2 and "Dee" not in folders  # 3 < 5 paintings.
    for name in first:  # Each link reads its source file.
        assert (tmp_path / "a" / name).read_bytes() == (source / name).read_bytes()
    assert (tmp_path / "a" / "artists.csv").exists()
    assert linked(tmp_path / "b", seed=0) == first  # The seed sets the choice.
    assert linked(tmp_path / "a", seed=0) == first  # A rerun is at home.
    other = next(seed for seed in range(1, 20) if linked(tmp_path / f"s{seed}", seed) != first)
    with pytest.raises(app.UsageError, match="another subsample"):
        recipe_compare.subsample(str(source), str(tmp_path / "a"), artists=2, paintings=5,
                                 seed=other)
    with pytest.raises(app.UsageError, match="2 artists of .* have 6 paintings or more"):
        recipe_compare.subsample(str(source), str(tmp_path / "c"), artists=3, paintings=6, seed=0)


def test_recipe_compare_reuses_a_finished_run_only_of_the_same_settings(tmp_path):
    from artist_id import configs
    from benchmarks import recipe_compare
    from trainer import train_lib

    config = configs.resolve("default", {"epochs": 7, "seed": 1})
    assert recipe_compare.finished_run(str(tmp_path), config) is None  # Nothing there yet.
    train_lib.prepare_workdir(config, str(tmp_path), overwrite=False)
    (tmp_path / train_lib.TEST_METRICS).write_text(json.dumps({"test_accuracy": 0.5}))
    # Epochs, warm-up and budget come from the budget's estimate: any of them is reused.
    rebudgeted = config.replace(epochs=9, warmup_epochs=1, cpu_budget_seconds=100.0)
    assert recipe_compare.finished_run(str(tmp_path), rebudgeted) == {"test_accuracy": 0.5}
    # Another setting (a changed default, say) is not that run.
    with pytest.raises(train_lib.WorkdirError, match=r"differs in: bn_momentum, mixup\)"):
        recipe_compare.finished_run(str(tmp_path), rebudgeted.replace(mixup=0.2,
                                                                      bn_momentum=0.9))


def test_views_compare_reproduces_the_run_and_varies_only_its_views(trained_run):
    _, workdir, metrics = trained_run
    figures = last_json("views_compare.py", f"--workdir={workdir}", "--rounds=1",
                        "--views=test_flips=true,eval_crops=1+test_flips=true")
    run_name, flips, crops = figures
    assert (flips, crops) == ("test_flips=true", "eval_crops=1+test_flips=true")
    assert [figures[name]["views"] for name in figures] == [1, 2, 4]
    # The run's own views and kept weights: the run's test report, figure for figure.
    own = figures[run_name]
    assert own["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-4)
    assert own["macro_f1"] == pytest.approx(metrics["test_macro_f1"], abs=1e-4)
    assert own["ece"] == pytest.approx(metrics["test_ece"], abs=1e-4)
    assert own["cost_ratio"] == 1.0 and all(f["cpu_ms_per_painting"] > 0
                                            for f in figures.values())
    result = subprocess.run([*benchmark("views_compare.py"),
                             f"--workdir={workdir}", "--views=epochs=3"],
                            env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "epochs changes training" in result.stderr


def test_views_compare_sizes_average_the_kept_weights_at_each_size(trained_run):
    config, workdir, metrics = trained_run
    size = config.data.image_size
    # The run's own size, alone and twice over (the mean of one answer is that answer),
    # reproduce the run's test report.
    figures = last_json("views_compare.py", f"--workdir={workdir}", "--rounds=1", "--views=",
                        f"--sizes={size},{size}+{size}")
    assert list(figures)[1:] == [f"sizes={size}", f"sizes={size}+{size}"]
    for name in list(figures)[1:]:
        assert figures[name]["test_accuracy"] == pytest.approx(metrics["test_accuracy"],
                                                               abs=1e-4)
        assert figures[name]["ece"] == pytest.approx(metrics["test_ece"], abs=1e-4)
    assert figures[f"sizes={size}+{size}"]["views"] == 2
    # seed_cnn flattens its last feature maps: its weights fit one input size only.
    result = subprocess.run([*benchmark("views_compare.py"),
                             f"--workdir={workdir}", "--views=", f"--sizes={size}+{2 * size}"],
                            env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and f"cannot run at {2 * size} px" in result.stderr


def test_app_bench(tiny_saved_model, tmp_path):
    out = tmp_path / "app_bench.json"
    figures = last_json("app_bench.py", f"--model_dir={tiny_saved_model}", "--clients=2",
                        "--batch_sizes=1,2", "--requests_per_client=2", "--rounds=1",
                        "--num_images=6", "--cost_batch_size=2", "--cost_calls=1",
                        f"--json_out={out}")
    assert_results_file(out, figures, "app_bench.py")
    rows = {(row["path"], row["batch"], row["clients"]): row for row in figures["rows"]}
    assert set(rows) == {(path, batch, 2) for path in ("server JSON", "in-process")
                         for batch in (1, 2)}
    for (_, batch, _), row in rows.items():
        # 2 clients x 2 requests x batch images, every one answered.
        assert row["images_sent"] == row["images_answered"] == 4 * batch
        assert row["errors"] == 0 and row["requests"] == 4
        assert row["images_per_s"] > 0 and 0 < row["p50_ms"] <= row["p95_ms"]
    assert [(r["batch"], r["clients"]) for r in figures["ratios"]] == [(1, 2), (2, 2)]
    assert [t["limit"] for t in figures["targets"]] == [3.0]  # No batch 32 measured.
    assert set(figures["signature_costs"]) == {"serving_default", "explain", "similar", "panel"}
    assert figures["signature_costs"]["explain"]["ms_per_image"] > 0


def test_open_set(tmp_path):
    from PIL import Image

    from tests.conftest import picture

    # 16, 19, 22, 25 paintings: the held-out artist's count says which folder was scored.
    counts = {f"Artist_{a}": 16 + 3 * a for a in range(4)}
    for a, (artist, count) in enumerate(counts.items()):
        folder = tmp_path / "source" / artist
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(picture(100 * a + i, 64, 80)).save(folder / f"{i}.jpg")
    out = tmp_path / "open_set.json"
    figures = last_json("open_set.py", f"--source_dir={tmp_path / 'source'}",
                        f"--workdir={tmp_path / 'work'}", "--held_out=1", f"--json_out={out}",
                        "--recipe=scratch", "--set=model=seed_cnn,image_size=32,batch_size=8,"
                        "epochs=1,warmup_epochs=0,gallery_per_artist=5,head=cosine")
    assert_results_file(out, figures, "open_set.py")
    assert sorted(os.listdir(tmp_path / "work" / "source")) == sorted(
        set(counts) - set(figures["held_out"]))
    [held_out] = figures["held_out"]
    paintings = figures["paintings"]
    # Every painting scored once: all of the held-out folder, the known folders' by split.
    assert paintings["held_out"] == counts[held_out] and paintings["refused"] == []
    known = sum(counts.values()) - counts[held_out]
    assert paintings["train"] + paintings["validation"] + paintings["test"] == known
    assert figures["known_artists"] == 3 and figures["run"]["epochs"] == 1
    # The gallery (5 an artist) gives the served familiarity and the rule's distance test.
    assert set(figures["scores"]) == {"msp", "class_mean", "knn", "familiarity"}
    assert -float("inf") < figures["rule"]["min_familiarity"] < float("inf")
    fractions = [figures["known_accuracy"], figures["validation_accuracy"],
                 figures["rule"]["unknown_rejected"], figures["rule"]["known_rejected"]]
    for score in figures["scores"].values():
        fractions += [score["auroc"]] + [score[point][share]
                                         for point in ("matched_rule", "at_known_reject")
                                         for share in ("unknown_rejected", "known_rejected")]
    [artist] = figures["per_held_out_artist"].values()
    assert list(figures["per_held_out_artist"]) == [held_out]
    assert artist["paintings"] == counts[held_out] and artist["taken_for"] not in counts
    fractions += [*artist["auroc"].values(), artist["rule_rejected"], artist["taken_for_share"]]
    assert all(0 <= value <= 1 for value in fractions)
    assert figures["targets"]["auroc"]["score"] in figures["scores"]

    # The same draw, for enrolment and verification (their benchmarks read open_set's runs).
    enrolled = last_json("enroll_bench.py", f"--draws={tmp_path / 'work'}", "--k=3,5")
    [draw] = enrolled["draws"].values()
    assert draw["held_out"] == [held_out] and list(draw["k"]) == ["3", "5"]
    assert draw["other_paintings"] == {held_out: counts[held_out] - 5}
    for row in [*draw["k"].values(), *enrolled["summary"].values()]:
        assert 0 <= row["named"] <= 1 and row["seconds_per_enrolment"] > 0
    assert enrolled["goal"] is None  # k = 10 not measured.
    verified = last_json("verify_bench.py", f"--draws={tmp_path / 'work'}")
    [draw] = verified["draws"].values()
    assert draw["unseen_pairs"]["true"] == counts[held_out] * (counts[held_out] - 1) // 2
    # One held-out artist: no pair of two unseen hands, so no AUROC there.
    assert draw["unseen_pairs"]["false"] == 0 and draw["unseen_pairs"]["auroc"] is None
    tested = draw["claims"]["true"]  # Each known test painting, claimed for its artist,
    assert tested == paintings["test"] and draw["claims"]["false"] == 2 * tested  # and 2 others.
    known_pairs = draw["known_pairs"]
    assert known_pairs["true"] + known_pairs["false"] == tested * (tested - 1) // 2
    assert 0 <= verified["summary"]["claims"]["auroc"] <= 1


def test_scale_bench(tmp_path):
    from PIL import Image

    from tests.conftest import picture

    for a in range(3):
        folder = tmp_path / "source" / f"Artist_{a}"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(picture(10 * a + i, 96, 128)).save(folder / f"{i}.jpg")
    figures = last_json("scale_bench.py", f"--source_dir={tmp_path / 'source'}",
                        f"--workdir={tmp_path / 'work'}", "--sizes=30,60", "--repeats=1",
                        "--image_size=32", "--batch_size=8")
    assert figures["sizes"] == [30, 60]
    for size in (30, 60):
        stages = figures["results"][str(size)]
        # Every crop made, stored and inferred; the epoch reads the training split only.
        assert stages["paintings"] == stages["build"]["images"] == stages["infer"]["images"] == size
        assert 0 < stages["epoch"]["images"] < size
        for stage in ("build", "epoch", "infer"):
            assert 0 < stages[stage]["seconds"] <= stages[stage]["process_seconds"]
            assert stages[stage]["peak_rss_mb"] > 100  # TensorFlow alone takes more.
    assert set(figures["fits"]) == {"build", "epoch", "infer"}
    assert all(fit["r2"] == 1.0 for fit in figures["fits"].values())  # Two points: a line.
    assert os.path.exists(figures["plot"])


def test_multi_worker_bench(tiny_data_dir, tmp_path):
    figures = last_json("multi_worker_bench.py", "--dataset=sample_paintings/tiny",
                        f"--data_dir={tiny_data_dir}", f"--workdir={tmp_path}", "--epochs=2",
                        "--rounds=1", "--train_flags=--recipe=scratch,--model=seed_cnn,"
                        "--image_size=32,--batch_size=8,--warmup_epochs=1",
                        # Two of the four (the two-worker test trains the others' way).
                        "--cases=loop x1,loop x2")
    assert set(figures["images_per_s"]) == {"loop x1", "loop x2"}
    assert all(value > 0 for value in figures["images_per_s"].values())
    assert set(figures["cpu_s_per_epoch"]) == {"loop x1", "loop x2"}
    assert all(value > 0 for value in figures["cpu_s_per_epoch"].values())
    assert figures["two_workers_over_one"] == pytest.approx(
        figures["images_per_s"]["loop x2"] / figures["images_per_s"]["loop x1"], rel=0.02)
    assert "loop_over_fit" not in figures  # Only ratios of cases that ran.


def test_calibration_pool(tmp_path):
    import numpy as np

    from trainer import calibration, report

    rng = np.random.default_rng(0)
    paths, parts = [], []
    for n, classes in ((120, 5), (200, 8)):  # Two runs' test splits, other artists.
        probabilities = calibration.softmax(rng.normal(0, 2, (n, classes)))
        labels = rng.integers(0, classes, n)
        metrics = report.confidence_metrics(labels, probabilities, temperature=1.0,
                                            min_confidence=0.5)
        paths.append(tmp_path / f"report_{n}.json")
        paths[-1].write_text(json.dumps(metrics))
        parts.append((probabilities, labels))
        assert metrics["calibration"]["ece"] == pytest.approx(
            calibration.expected_calibration_error(probabilities, labels))
    result = last_json("calibration_pool.py", f"--reports={paths[0]},{paths[1]}")
    # The pooled ECE is that of all 320 answers: their top probabilities and right or wrong.
    confidence = np.concatenate([p.max(axis=1) for p, _ in parts])
    right = np.concatenate([p.argmax(axis=1) == y for p, y in parts])
    index = calibration.bin_index(confidence, calibration.ECE_BINS)
    direct = sum(abs(right[index == b].sum() - confidence[index == b].sum())
                 for b in range(calibration.ECE_BINS)) / len(right)
    assert result["pooled"]["paintings"] == 320
    assert result["pooled"]["ece"] == pytest.approx(direct, abs=1e-6)
    assert result["pooled"]["accuracy"] == pytest.approx(right.mean(), abs=1e-6)
    assert result["reports"][str(paths[0])]["ece"] == pytest.approx(
        calibration.expected_calibration_error(*parts[0]), abs=1e-6)
    assert result["pooled"]["ece_floor"] < result["reports"][str(paths[0])]["ece_floor"]
    # A report from before the totals were kept: what to do, not a traceback.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"calibration": {"ece": 0.1}}))
    run = subprocess.run([*benchmark("calibration_pool.py"),
                          f"--reports={old}"], env=ENV, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "no calibration bin totals" in run.stderr
    assert "evaluate.py" in run.stderr and "Traceback" not in run.stderr
