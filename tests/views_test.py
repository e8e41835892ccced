"""Multi-crop inference: the views op's pixels, the combination of views, and a served file
against the same file in the test split, with crops and flips on."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import pipeline
from pipeline import ops
from pipeline import views as views_lib
from serving import explain, multiview
from serving import gallery as gallery_lib
from tests.conftest import TINY, encode, make_split, picture, run, tiny_config
from trainer import evaluation, train_lib


def ramp(height: int, width: int) -> np.ndarray:
    """Channel 0 = row, channel 1 = column, channel 2 = 7: every pixel says where it is."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def test_views_are_the_whole_painting_then_the_grid_then_mirrors():
    image = ramp(10, 12)
    spec = views_lib.Views(4, crops=5, flips=True)
    views = views_lib.views(tf.constant(image), spec).numpy()
    assert views.shape == (12, 4, 4, 3) and views.dtype == np.uint8 and spec.count == 12
    np.testing.assert_array_equal(views[0], ops.resize(tf.constant(image), 4).numpy())
    # Top-left pixel of each crop, at the painting's own pixels: centre (3, 4), the corners.
    origins = [tuple(view[0, 0, :2]) for view in views[1:6]]
    assert origins == [(3, 4), (0, 0), (0, 8), (6, 0), (6, 8)]
    for view, (y, x) in zip(views[1:6], origins):
        np.testing.assert_array_equal(view, image[y:y + 4, x:x + 4])
    np.testing.assert_array_equal(views[6:], views[:6, :, ::-1])


def test_crops_at_a_chosen_scale_and_of_small_paintings():
    # Shorter side 40 -> crop_scale 2 x 5 px = 10: the painting shrinks 4x, a crop spans
    # 20 source pixels a side, each view pixel the mean of 4 x 4 (a ramp keeps its slope).
    image = ramp(40, 60)
    views = views_lib.views(tf.constant(image), views_lib.Views(5, crops=2, crop_scale=2.0))
    assert views.shape == (3, 5, 5, 3)
    assert views_lib.Views(5, crops=2, crop_scale=2.0).decode_size == 10
    centre = views[1].numpy().astype(int)
    np.testing.assert_array_equal(np.diff(centre[:, 0, 0]), 4)  # 4 source rows a pixel.
    np.testing.assert_array_equal(np.diff(centre[0, :, 1]), 4)
    # A painting smaller than the crop is enlarged to it: every view is still S x S.
    small = views_lib.views(tf.constant(ramp(3, 6)), views_lib.Views(6, crops=5))
    assert small.shape == (6, 6, 6, 3)


def test_one_view_is_todays_resize_and_decode_bit_for_bit():
    image = picture(2, 48, 64)
    spec = views_lib.Views(32, "crop")
    assert spec.count == 1 and spec.decode_size == 32
    for encoded in (encode(image), encode(image, "PNG")):
        np.testing.assert_array_equal(
            views_lib.decode(tf.constant(encoded), spec).numpy(),
            ops.decode_resized(tf.constant(encoded), 32, mode="crop").numpy())


def test_views_decode_eager_and_in_dataset_map_agree():
    spec = views_lib.Views(16, crops=4, crop_scale=1.5, flips=True)
    encoded = tf.constant([encode(picture(i, 40, 56)) for i in range(3)])
    eager = np.stack([views_lib.decode(e, spec).numpy() for e in encoded])
    mapped = np.stack(list(tf.data.Dataset.from_tensor_slices(encoded).map(
        lambda e: views_lib.decode(e, spec)).as_numpy_iterator()))
    np.testing.assert_array_equal(eager, mapped)
    assert eager.shape == (3, 10, 16, 16, 3)


def test_views_settings_are_checked():
    with pytest.raises(pipeline.settings.ConfigError, match="crop_scale"):
        pipeline.DataConfig(crop_scale=0.5)
    with pytest.raises(pipeline.settings.ConfigError, match="eval_crops"):
        pipeline.DataConfig(eval_crops=views_lib.MAX_CROPS + 1)
    with pytest.raises(pipeline.settings.ConfigError, match="--eval_scale=0, one size, for crops"):
        pipeline.DataConfig(eval_crops=2)  # The declared multi-scale inference, and crops.
    data = pipeline.DataConfig(eval_crops=2, test_flips=True, eval_scale=0.0)
    assert data.views.count == 6 and data.single_view().views.count == 1


def test_combined_logits_are_the_log_of_the_mean_probability():
    logits = tf.constant([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [5.0, 0.0, 0.0]])
    combined = multiview.combine_logits([logits], 2).numpy()
    expected = np.log([tf.nn.softmax(logits[:2]).numpy().mean(0),
                       tf.nn.softmax(logits[2:]).numpy().mean(0)])
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    assert multiview.combine_logits([logits], 1) is logits  # One view: untouched.
    # A valid logits vector: softmax of it is the mean probability itself.
    np.testing.assert_allclose(tf.nn.softmax(combined).numpy(), np.exp(expected), rtol=1e-5)
    unit = tf.math.l2_normalize(tf.constant([[1.0, 0.0], [0.0, 1.0]]), axis=-1)
    np.testing.assert_allclose(multiview.combine_embeddings([unit], 2).numpy(),
                               [[0.5 ** 0.5, 0.5 ** 0.5]], rtol=1e-6)
    # Two passes of one view each (multi-scale): a painting's rows are one from each pass.
    np.testing.assert_allclose(multiview.combine_logits([logits[::2], logits[1::2]], 1).numpy(),
                               combined, rtol=1e-5)
    np.testing.assert_allclose(multiview.combine_embeddings([unit[:1], unit[1:]], 1).numpy(),
                               [[0.5 ** 0.5, 0.5 ** 0.5]], rtol=1e-6)


def test_crops_of_a_small_square_repeat_it_and_are_flagged_so(tiny_builder):
    spec = views_lib.Views(32, crops=4)
    square = views_lib.views(tf.constant(ramp(24, 24)), spec).numpy()
    # Enlarged to 32 px and cropped to 32 px: each crop is the whole view again.
    assert all(np.array_equal(view, square[0]) for view in square[1:])
    assert views_lib.repeats_whole(24, 24, spec) and views_lib.repeats_whole(32, 32, spec)
    oblong = views_lib.views(tf.constant(ramp(24, 30)), spec).numpy()
    assert not np.array_equal(oblong[2], oblong[0])
    assert not views_lib.repeats_whole(24, 30, spec)
    assert not views_lib.repeats_whole(40, 40, spec)  # Larger: crops see a part of it.
    assert not views_lib.repeats_whole(24, 24, views_lib.Views(32, crops=4, crop_scale=1.5))
    assert not views_lib.repeats_whole(24, 24, views_lib.Views(32))  # No crops at all.
    # A split's share: its squares, at an image size above every painting's; none below.
    import io

    from PIL import Image

    sizes = [Image.open(io.BytesIO(data)).size
             for data in pipeline.encoded_images(tiny_builder, "test")]
    squares = sum(width == height for width, height in sizes)
    assert 0 < squares < len(sizes)
    data = pipeline.DataConfig(dataset=TINY, image_size=512, eval_crops=2, eval_scale=0.0)
    assert pipeline.crops_repeating_whole(tiny_builder, "test", data) == squares / len(sizes)
    small = pipeline.DataConfig(dataset=TINY, image_size=128, eval_crops=2, eval_scale=0.0)
    assert pipeline.crops_repeating_whole(tiny_builder, "test", small) == 0.0


def test_evaluation_split_gives_every_view_and_its_first_is_the_whole_painting(tiny_builder):
    common = dict(training=False, image_size=32, batch_size=8)
    (single, labels), = make_split(tiny_builder, "test", **common).take(1)
    (views, view_labels), = make_split(tiny_builder, "test", eval_crops=4, test_flips=True,
                                       **common).take(1)
    assert views.shape == (8, 10, 32, 32, 3) and views.dtype == tf.float32
    # Crops of stored pixels decode paintings at full size, where one view decodes large
    # JPEGs at reduced scale: the same whole painting, to a few 1/255 (measured: 2.9).
    assert np.abs(views[:, 0].numpy() - single.numpy()).mean() < 4 / 255
    np.testing.assert_array_equal(view_labels, labels)


# --- The whole path: train, evaluate, export, serve ------------------------------------

CROPS = dict(eval_crops=4, test_flips=True, crop_probability=0.5)


@pytest.fixture(scope="module")
def crops_run(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("crops_run"))
    config = tiny_config(tiny_data_dir, epochs=1, warmup_epochs=0, gallery_per_artist=4, **CROPS)
    train_lib.train_and_evaluate(config, workdir)
    return config, workdir


def test_served_file_and_test_split_get_identical_probabilities(crops_run, tiny_builder):
    config, workdir = crops_run
    _, model = train_lib.load_run(workdir)
    path = os.path.join(workdir, "saved_model")
    with open(os.path.join(path, "assets.extra", "metadata.json")) as f:
        document = json.load(f)
    assert document["views"]["count"] == 10 and document["views"]["positions"][0] == "centre"
    temperature = document["calibration"]["temperature"]
    labels, evaluated = evaluation.predict_split(
        tiny_builder, "test", config.data, evaluation.keras_predict_fn(model, temperature))
    loaded = tf.saved_model.load(path)
    encoded = tf.constant(pipeline.encoded_images(tiny_builder, "test"))
    served = loaded.signatures["serving_default"](images=encoded)["probabilities"].numpy()
    np.testing.assert_allclose(served, evaluated, atol=1e-6)
    # Not the whole painting's answer alone: the views changed it.
    whole = evaluation.keras_predict_fn(model, temperature)(
        tf.constant(np.stack([ops.rescale(ops.decode_resized(e, 32)).numpy() for e in encoded])))
    assert np.abs(whole - evaluated).max() > 1e-4
    # The panel and the pixel signatures answer with the same average.
    panel = loaded.signatures["panel"](images=encoded)
    np.testing.assert_allclose(panel["probabilities"].numpy(), served, atol=1e-6)
    pixels = tf.constant(ops.decode_image(encoded[0]).numpy()[None])
    by_pixels = loaded.signatures["serve_pixels"](pixels=pixels)["probabilities"].numpy()
    np.testing.assert_allclose(by_pixels[0], served[0], atol=1e-6)


def test_explain_and_embed_of_a_multi_view_model(crops_run, tiny_builder):
    config, workdir = crops_run
    _, model = train_lib.load_run(workdir)
    loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    encoded = tf.constant(pipeline.encoded_images(tiny_builder, "test")[:3])
    explained = loaded.signatures["explain"](images=encoded)
    served = loaded.signatures["serving_default"](images=encoded)
    np.testing.assert_array_equal(explained["explained_ids"].numpy(),
                                  served["top_k_ids"][:, 0].numpy())
    # The heatmap is Grad-CAM on the whole-painting view, for the combined top-1 artist.
    views = tf.stack([ops.rescale(views_lib.decode(e, config.data.views)) for e in encoded])
    alone = explain.analyze(explain.explainable(model), views[:, 0], explained["explained_ids"])
    np.testing.assert_allclose(explained["heatmaps"].numpy(), alone["heatmaps"].numpy(),
                               atol=1e-5)
    embedded = loaded.signatures["embed"](images=encoded)["embeddings"].numpy()
    flat = explain.normalized_embeddings(
        explain.explainable(model)(tf.reshape(views, [-1, 32, 32, 3]))[1]).numpy()
    mean = flat.reshape(3, 10, -1).mean(axis=1)
    np.testing.assert_allclose(embedded, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-5)


def test_one_pass_answer_fn_gives_the_predicted_probabilities_and_served_embeddings(
        crops_run, tiny_builder):
    # The report's one forward pass (probabilities and embeddings together) against the
    # two it replaced: keras_predict_fn's probabilities, the `embed` signature's rows.
    config, workdir = crops_run
    _, model = train_lib.load_run(workdir)
    loaded = tf.saved_model.load(os.path.join(workdir, "saved_model"))
    encoded = pipeline.encoded_images(tiny_builder, "test")
    _, rows = evaluation.predict_split(
        tiny_builder, "test", config.data,
        evaluation.keras_answer_fn(explain.explainable(model), 0.7))
    _, probabilities = evaluation.predict_split(
        tiny_builder, "test", config.data, evaluation.keras_predict_fn(model, 0.7))
    assert sorted(rows) == ["embeddings", "probabilities"]
    np.testing.assert_allclose(rows["probabilities"], probabilities, atol=1e-6)
    embedded = loaded.signatures["embed"](images=tf.constant(encoded))["embeddings"].numpy()
    np.testing.assert_allclose(rows["embeddings"], embedded, atol=1e-5)
    assert evaluation.outputs_of(probabilities)[1:] == (None, None)
    # The rule's distance test needs the embeddings: probabilities alone are refused.
    explainer = explain.explainable(model)
    gallery = gallery_lib.build(explainer, tiny_builder, "train", config.data, per_artist=4,
                                seed=0)
    answer = evaluation.fit_answer(tiny_builder, "validation", config.data,
                                   evaluation.keras_answer_fn(explainer), target_precision=0.9,
                                   gallery=gallery, novelty_reject=0.2)
    assert np.isfinite(answer["min_familiarity"])
    with pytest.raises(ValueError, match="needs embeddings"):
        evaluation.fit_answer(tiny_builder, "validation", config.data,
                              evaluation.keras_predict_fn(model), target_precision=0.9,
                              gallery=gallery, novelty_reject=0.2)


def test_evaluate_py_scores_a_multi_view_model_as_training_did(crops_run, tiny_builder, tmp_path):
    _, workdir = crops_run
    with open(os.path.join(workdir, "report.json")) as f:
        trained = json.load(f)
    # A process of its own: evaluate.py's flags would clash with serve.py's in this one.
    result = run(["evaluate.py", f"--model_dir={workdir}/saved_model", f"--dataset={TINY}",
                  f"--data_dir={tiny_builder.data_dir_root}", "--split=test",
                  f"--out_dir={tmp_path}/eval"], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "eval" / "report.json") as f:
        scored = json.load(f)
    assert scored["accuracy"] == trained["accuracy"]
    np.testing.assert_allclose(scored["calibration"]["nll"], trained["calibration"]["nll"],
                               rtol=1e-5)


def test_predict_info_states_the_views(crops_run):
    _, workdir = crops_run
    result = run(["predict.py", f"--model_dir={workdir}/saved_model", "--info"])
    assert result.returncode == 0, result.stderr
    assert ("Views: 10 per image (the whole painting, 4 crops at the painting's own pixels, "
            "mirrored too), probabilities averaged") in result.stdout


# --- Multi-scale: the whole painting at the model's size and at a larger one -----------

SCALED = dict(model="resnet_small", eval_scale=1.5, test_flips=True)


@pytest.fixture(scope="module")
def scaled_run(tiny_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("scaled_run"))
    config = tiny_config(tiny_data_dir, epochs=1, warmup_epochs=0, gallery_per_artist=4,
                         **SCALED)
    train_lib.train_and_evaluate(config, workdir)
    return config, workdir


def test_multi_scale_views_are_one_tensor_at_the_larger_size():
    spec = views_lib.Views(32, scale=1.5, flips=True)
    assert (spec.size, spec.pixel_count, spec.count, spec.decode_size) == (48, 2, 4, 48)
    assert spec.describe()["sizes"] == [32, 48]
    image = tf.constant(picture(3, 72, 92))
    views = views_lib.views(image, spec).numpy()
    np.testing.assert_array_equal(views[0], ops.resize(image, 48).numpy())
    np.testing.assert_array_equal(views[1], views[0][:, ::-1])
    flat, count = multiview.passes(tf.constant(views[None]), 32)
    assert count == 2 and [p.shape for p in flat] == [(2, 32, 32, 3), (2, 48, 48, 3)]
    with pytest.raises(ValueError, match="cannot be combined"):
        views_lib.Views(32, scale=1.5, crops=1)
    with pytest.raises(ValueError, match="larger|above"):
        views_lib.Views(32, scale=1.01)


def test_multi_scale_settings_are_checked(tiny_data_dir):
    with pytest.raises(ValueError, match="eval_crops cannot be combined"):
        tiny_config(tiny_data_dir, model="resnet_small", eval_scale=1.5, eval_crops=1)
    with pytest.raises(ValueError, match="seed_cnn"):
        tiny_config(tiny_data_dir, eval_scale=1.5)


def test_multi_scale_served_file_and_test_split_get_identical_probabilities(
        scaled_run, tiny_builder):
    config, workdir = scaled_run
    _, model = train_lib.load_run(workdir)
    path = os.path.join(workdir, "saved_model")
    with open(os.path.join(path, "assets.extra", "metadata.json")) as f:
        document = json.load(f)
    assert document["views"]["count"] == 4 and document["views"]["sizes"] == [32, 48]
    temperature = document["calibration"]["temperature"]
    labels, evaluated = evaluation.predict_split(
        tiny_builder, "test", config.data, evaluation.keras_predict_fn(model, temperature))
    loaded = tf.saved_model.load(path)
    encoded = pipeline.encoded_images(tiny_builder, "test")
    served = loaded.signatures["serving_default"](images=tf.constant(encoded))
    np.testing.assert_allclose(served["probabilities"].numpy(), evaluated, atol=1e-6)
    # By hand: the painting at 48 px and that shrunk to 32, each mirrored, the four
    # softmaxes averaged, then the temperature.
    large = np.stack([ops.decode_resized(e, 48).numpy() for e in encoded[:4]])
    small = np.round(tf.image.resize(large.astype(np.float32), [32, 32], method="area")
                     .numpy()).astype(np.uint8)
    softmaxes = [tf.nn.softmax(model(ops.rescale(tf.constant(x)), training=False)).numpy()
                 for x in (small, small[:, :, ::-1], large, large[:, :, ::-1])]
    expected = tf.nn.softmax(np.log(np.mean(softmaxes, axis=0)) / temperature).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy()[:4], expected, atol=1e-5)
    alone = evaluation.keras_predict_fn(model, temperature)(ops.rescale(tf.constant(small)))
    assert np.abs(alone - expected).max() > 1e-4  # The larger view changed the answer.
    # Every signature runs the same views: the heatmap is on the 32 px whole painting.
    explained = loaded.signatures["explain"](images=tf.constant(encoded[:4]))
    assert explained["heatmaps"].shape[1:] == explain.analyze(
        explain.explainable(model), ops.rescale(tf.constant(small)))["heatmaps"].shape[1:]
    np.testing.assert_array_equal(explained["explained_ids"].numpy(),
                                  served["top_k_ids"][:4, 0].numpy())
    pixels = tf.constant(ops.decode_image(encoded[0]).numpy()[None])
    by_pixels = loaded.signatures["serve_pixels"](pixels=pixels)["probabilities"].numpy()
    np.testing.assert_allclose(by_pixels[0], served["probabilities"][0], atol=1e-6)
    result = run(["predict.py", f"--model_dir={path}", "--info"])
    assert "Views: 4 per image (the whole painting at 32 and 48 px, mirrored too)" in (
        result.stdout), result.stdout + result.stderr
