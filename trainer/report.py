"""Evaluation report: metrics from predictions, and the pictures people look at."""

import csv
import io
import json
import os

import numpy as np
from PIL import Image

from serving import export
from trainer import calibration

TOP_K = export.DEFAULT_TOP_K


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, names: list[str]) -> dict:
    """Accuracy, top-5, balanced accuracy, macro-F1 and per-artist numbers."""
    labels = np.asarray(labels)
    predictions = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predictions, len(names))
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, hits / support, 0.0)
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0  # Averages run over artists that the split holds.
    k = min(TOP_K, len(names))
    top_k = np.argsort(-probabilities, axis=1)[:, :k]
    return {
        "examples": int(len(labels)),
        "accuracy": float((predictions == labels).mean()),
        f"top{k}_accuracy": float((top_k == labels[:, None]).any(axis=1).mean()),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "per_artist": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
    }


def confidence_metrics(labels: np.ndarray, probabilities: np.ndarray, *, temperature: float,
                       min_confidence: float, min_familiarity: float | None = None,
                       unknown: np.ndarray | None = None) -> dict:
    """`calibration` (ECE and NLL before and after the temperature) and `abstention` (what
    the stored rule keeps and how often it is right) on this split. `unknown`: the rule's
    answer per painting (default: the top probability below `min_confidence`)."""
    labels = np.asarray(labels)
    before = calibration.uncalibrated(probabilities, temperature)
    kept = ~unknown_or_below(probabilities, min_confidence, unknown)
    right = probabilities.argmax(axis=1) == labels
    totals = calibration.bin_totals(probabilities, labels)
    floor, floor_sd = calibration.ece_noise_floor(totals)
    return {
        "calibration": {
            "temperature": temperature, "bins": calibration.ECE_BINS,
            "ece_before": calibration.expected_calibration_error(before, labels),
            "ece": calibration.ece_of_totals(totals),
            # What a perfectly calibrated model would show on this split, for scale.
            "ece_floor": floor, "ece_floor_sd": floor_sd,
            # What pools with other splits' (benchmarks/calibration_pool.py).
            "bin_totals": {name: values.tolist() for name, values in totals.items()},
            "nll_before": calibration.negative_log_likelihood(before, labels),
            "nll": calibration.negative_log_likelihood(probabilities, labels),
        },
        "abstention": {
            "min_confidence": min_confidence,
            **({"min_familiarity": min_familiarity} if min_familiarity is not None else {}),
            "coverage": float(kept.mean()),
            "accuracy_answered": float(right[kept].mean()) if kept.any() else None,
            "unknown_fraction": float(1 - kept.mean()),
        },
    }


def unknown_or_below(probabilities: np.ndarray, min_confidence: float,
                     unknown: np.ndarray | None) -> np.ndarray:
    return (np.asarray(unknown, bool) if unknown is not None
            else calibration.is_unknown(probabilities, min_confidence=min_confidence))


def rule_text(abstention: dict) -> str:
    """The stored "unknown artist" rule in words (report.md, the coverage plot's legend)."""
    text = f"top probability is below {abstention['min_confidence']:.3f}"
    if abstention.get("min_familiarity") is not None:
        text += (f" or its familiarity is below {abstention['min_familiarity']:.3f} (how "
                 "much it looks like the training paintings of the artist nearest to it)")
    return text


def floor_note(calibration_metrics: dict) -> str:
    """How large an ECE a perfectly calibrated model would show on the same split."""
    if "ece_floor" not in calibration_metrics:  # Reports written before it was measured.
        return ""
    return (f" (a perfectly calibrated model would show {calibration_metrics['ece_floor']:.3f}"
            f" ± {calibration_metrics['ece_floor_sd']:.3f} on this many paintings)")


def confidence_lines(metrics: dict) -> list[str]:
    """report.md's lines on calibration and the "unknown artist" rule: with the validation
    fit ("validation_fit", `trainer.evaluation.fit_answer`'s), how the temperature was
    chosen and its warning; and a warning when the rule answers few of this split's
    paintings."""
    c, a = metrics["calibration"], metrics["abstention"]
    fitted = metrics.get("validation_fit") or {}
    method = (fitted.get("calibration") or {}).get("method", "chosen on the validation split")
    answered = "-" if a["accuracy_answered"] is None else f"{a['accuracy_answered']:.1%}"
    lines = ["", f"Confidence: temperature {c['temperature']:.3f} ({method}); "
             f"expected calibration error ({c['bins']} bins) {c['ece_before']:.3f} before, "
             f"{c['ece']:.3f} after{floor_note(c)}; NLL {c['nll_before']:.3f} before, "
             f"{c['nll']:.3f} after (reliability.png).", "",
             f"\"Unknown artist\" when the {rule_text(a)}: "
             f"{a['coverage']:.1%} of paintings answered, {answered} of them right; "
             f"{a['unknown_fraction']:.1%} unknown (coverage.png)."]
    if fitted.get("warning"):
        lines += ["", f"**Warning: {fitted['warning']}.**"]
    if a["coverage"] < calibration.FALLBACK_COVERAGE:
        lines += ["", f"**Warning: the rule answers only {a['coverage']:.1%} of this split's "
                  "paintings; every other painting gets \"unknown artist\".**"]
    return lines


def neighbour_lines(metrics: dict) -> list[str]:
    """report.md's lines on the nearest-neighbour second opinion, beside the classifier."""
    neighbours = metrics.get("nearest_neighbours")
    if not neighbours:
        return []
    vote = next(k for k in neighbours if k.endswith("_vote_accuracy"))
    return ["", f"Nearest training paintings (gallery of {neighbours['gallery_size']} paintings, "
            f"{neighbours['gallery_megabytes']} MB in the SavedModel), by cosine similarity "
            "of embeddings:", "",
            "| answer | accuracy |", "|---|---:|",
            f"| classifier | {metrics['accuracy']:.1%} |",
            f"| nearest painting's artist (k = 1) | {neighbours['nn1_accuracy']:.1%} |",
            f"| vote of the {vote[2:-len('_vote_accuracy')]} nearest | {neighbours[vote]:.1%} |"]


def write_markdown(metrics: dict, path: str, *, title: str) -> None:
    top_key = next(k for k in metrics if k.startswith("top") and k.endswith("_accuracy"))
    lines = [
        f"# {title}", "",
        f"- examples: {metrics['examples']}",
        f"- accuracy: {metrics['accuracy']:.1%}",
        f"- {top_key.replace('_', ' ')}: {metrics[top_key]:.1%}",
        f"- balanced accuracy: {metrics['balanced_accuracy']:.1%}",
        f"- macro-F1: {metrics['macro_f1']:.3f}",
        *(confidence_lines(metrics) if "calibration" in metrics else []),
        *neighbour_lines(metrics), "",
        "| artist | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|",
    ]
    for name, row in sorted(metrics["per_artist"].items(), key=lambda kv: -kv[1]["f1"]):
        lines.append(f"| {name} | {row['precision']:.2f} | {row['recall']:.2f} | "
                     f"{row['f1']:.2f} | {row['support']} |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _pyplot():
    # Imported on first use: matplotlib costs a second of start-up that a
    # process which only computes metrics (or only reads csv_number) never needs.
    import matplotlib

    matplotlib.use("Agg")  # Files only: no display on servers.
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(matrix: np.ndarray, names: list[str], path: str) -> None:
    """Row-normalised confusion matrix with artist names on both axes."""
    plt = _pyplot()
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(5.0, 0.32 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted artist")
    ax.set_ylabel("true artist")
    if len(names) <= 20:
        for (i, j), value in np.ndenumerate(normalised):
            if matrix[i, j]:
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true artist's paintings")
    ax.set_title("Confusion matrix (rows sum to 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_mistakes(
    images: list[bytes], labels: np.ndarray, probabilities: np.ndarray, names: list[str],
    path: str, *, count: int = 16,
) -> int:
    """Gallery of the most confident mistakes; returns how many it shows."""
    plt = _pyplot()
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predictions[wrong]])][:count]
    columns = 4
    rows = max(1, -(-len(wrong) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, wrong):
        image = Image.open(io.BytesIO(images[index])).convert("RGB")
        image.thumbnail((256, 256))
        ax.imshow(image)
        ax.set_title(f"true: {names[labels[index]]}\npredicted: {names[predictions[index]]} "
                     f"({probabilities[index, predictions[index]]:.0%})", fontsize=8)
    if not len(wrong):
        axes[0, 0].text(0.0, 0.5, "No mistakes on this split.", fontsize=12)
    fig.suptitle("Most confident mistakes")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # Leave room for the title.
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(wrong)


def plot_reliability(labels: np.ndarray, probabilities: np.ndarray, temperature: float,
                     path: str) -> None:
    """Accuracy against confidence per bin, before and after the temperature."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, probs in (("before", calibration.uncalibrated(probabilities, temperature)),
                         (f"after (T = {temperature:.2f})", probabilities)):
        table = calibration.reliability(probs, labels)
        filled = table["count"] > 0
        ece = calibration.expected_calibration_error(probs, labels)
        ax.plot(table["confidence"][filled], table["accuracy"][filled], marker="o",
                label=f"{label}: ECE {ece:.3f}")
    _finish_unit_plot(fig, ax, path, x="confidence (top probability), 15 equal-width bins",
                      y="accuracy in the bin", legend="upper left", title="Reliability diagram")


def plot_coverage(labels: np.ndarray, probabilities: np.ndarray, min_confidence: float,
                  path: str, *, min_familiarity: float | None = None,
                  unknown: np.ndarray | None = None) -> None:
    """Accuracy of the answers kept against the share of paintings answered, and where the
    stored rule (`unknown`: p < `min_confidence` or familiarity < `min_familiarity`) sits."""
    plt = _pyplot()
    _, coverage, accuracy = calibration.accuracy_coverage(probabilities, labels)
    kept = ~unknown_or_below(probabilities, min_confidence, unknown)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot(coverage, accuracy, label="answer the most confident first")
    if kept.any():
        right = (probabilities.argmax(axis=1) == labels)[kept].mean()
        ax.plot([kept.mean()], [right], marker="o", color="C3", linestyle="none",
                label=f"stored rule: p >= {min_confidence:.2f}" + (
                    "" if min_familiarity is None else
                    f" and familiarity >= {min_familiarity:.2f}"))
    _finish_unit_plot(fig, ax, path, x="coverage (share of paintings answered)",
                      y="accuracy of the answers given", legend="lower left",
                      title="Accuracy-coverage: the rest is \"unknown artist\"", top=1.02)


def _finish_unit_plot(fig, ax, path: str, *, x: str, y: str, legend: str, title: str,
                      top: float = 1.0) -> None:
    """Labels, a [0, 1] square with a grid, the legend; saved to `path` and closed."""
    plt = _pyplot()
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, top)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def csv_number(value: str | None) -> float | None:
    """A metrics.csv cell as a number; None when empty or "NA" (Keras' CSVLogger writes
    the val_* columns as "NA" when there is no validation split)."""
    return None if value in (None, "", "NA") else float(value)


def plot_curves(metrics_csv: str, path: str) -> None:
    """Loss and accuracy per epoch, training and validation, from metrics.csv."""
    with open(metrics_csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    plt = _pyplot()
    epochs = [int(row["epoch"]) + 1 for row in rows]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [v for row in rows if (v := csv_number(row.get(prefix + key))) is not None]
            if values:
                ax.plot(epochs[:len(values)], values, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out_dir: str, *, labels: np.ndarray, probabilities: np.ndarray, names: list[str],
    images: list[bytes], title: str, neighbours: dict | None = None,
    temperature: float = 1.0, min_confidence: float = 0.0,
    min_familiarity: float | None = None, unknown: np.ndarray | None = None,
    fitted: dict | None = None,
) -> dict:
    """report.json, report.md, confusion.png, mistakes.png, reliability.png and coverage.png
    in `out_dir`. `probabilities` are calibrated (of logits / `temperature`);
    `min_confidence` and `min_familiarity` are the "unknown artist" rule and `unknown`
    its answer per painting (`confidence_metrics`); `neighbours`
    (`serving.gallery.neighbour_metrics`) goes in as `nearest_neighbours`; `fitted`,
    how the temperature and rule were fitted on validation
    (`trainer.evaluation.fit_answer`), as `validation_fit`."""
    os.makedirs(out_dir, exist_ok=True)
    labels = np.asarray(labels)
    metrics = compute_metrics(labels, probabilities, names)
    metrics.update(confidence_metrics(labels, probabilities, temperature=temperature,
                                      min_confidence=min_confidence,
                                      min_familiarity=min_familiarity, unknown=unknown))
    if neighbours:
        metrics["nearest_neighbours"] = neighbours
    if fitted:
        metrics["validation_fit"] = fitted
    with open(os.path.join(out_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump({"title": title, **metrics}, f, indent=2, ensure_ascii=False)
    write_markdown(metrics, os.path.join(out_dir, "report.md"), title=title)
    plot_confusion(np.array(metrics["confusion_matrix"]), names, os.path.join(out_dir, "confusion.png"))
    plot_mistakes(images, labels, probabilities, names, os.path.join(out_dir, "mistakes.png"))
    plot_reliability(labels, probabilities, temperature, os.path.join(out_dir, "reliability.png"))
    plot_coverage(labels, probabilities, min_confidence, os.path.join(out_dir, "coverage.png"),
                  min_familiarity=min_familiarity, unknown=unknown)
    return metrics
