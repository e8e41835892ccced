"""The results tables: each public function takes the results and returns one Markdown table.

`tools/results.py` puts a function's table where a document says
`<!-- results: NAME -->`. A function reads only `results[FILE]` (FILE:
results/FILE.json, as a benchmark's `--json_out` wrote it): a missing file is
an error naming it, never a blank.
"""

import collections.abc


class Results(collections.abc.Mapping):
    """{results file name: document}; `results["x"]` raises KeyError("x") when x.json is absent."""

    def __init__(self, documents: dict[str, dict]):
        self._documents = documents

    def __getitem__(self, name: str) -> dict:
        if name not in self._documents:
            raise KeyError(name)
        return self._documents[name]

    def __iter__(self):
        return iter(self._documents)

    def __len__(self) -> int:
        return len(self._documents)

    def result(self, name: str) -> dict:
        return self[name]["result"]


# --- Formatting -----------------------------------------------------------------------


def percent(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f} %"


def points(value: float) -> str:
    return f"{100 * value:+.1f} points"


def number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def source(results: Results, *names: str) -> str:
    """Where the figures above came from: each file's command, commit and machine."""
    lines = []
    for name in names:
        document = results[name]
        machine = document.get("machine") or {}
        where = ", ".join(part for part in (
            f"commit {document['commit']}" if document.get("commit") else "",
            f"{machine.get('cores')} cores" if machine.get("cores") else "",
            machine.get("cpu", "")) if part)
        lines.append(f"`{document['command']}` ({where}; `results/{name}.json`)")
    return "\n" + "<br>\n".join(lines) + "\n"


def runs_of(results: Results, prefix: str) -> list[str]:
    """The results files named `prefix` or `prefix_*`, in name order."""
    return sorted(name for name in results if name == prefix or name.startswith(prefix + "_"))


# --- Accuracy: recipes ------------------------------------------------------------------


def _recipes(results: Results, name: str) -> str:
    variants = results.result(name)
    seeds = len(next(iter(variants.values()))["runs"])
    rows = []
    for variant, figures in variants.items():
        spread = f" ± {percent(figures['test_accuracy_sd'])}" if seeds > 1 else ""
        runs = figures["runs"]
        rows.append([f"`{variant}`", percent(figures["test_accuracy"]) + spread,
                     f"{figures['macro_f1']:.3f}", points(figures["gain"]),
                     number(sum(r["epochs"] for r in runs) / len(runs), 1),
                     number(sum(r["cpu_seconds"] for r in runs) / len(runs))])
    header = ["recipe", f"test accuracy ({seeds} seed{'s' * (seeds > 1)})", "macro-F1",
              "against the first", "epochs", "training CPU s"]
    return table(header, rows) + source(results, name)


def recipes_devset(results: Results) -> str:
    return _recipes(results, "recipes_devset")


def recipes_subsample(results: Results) -> str:
    return _recipes(results, "recipes_subsample")


def calibration(results: Results) -> str:
    names = [name for name in ("recipes_devset", "recipes_subsample") if name in results]
    if not names:
        raise KeyError("recipes_devset")
    rows = []
    for name in names:
        for seed, run in enumerate(results.result(name)["default"]["runs"]):
            if "ece" not in run:
                continue
            rows.append([COLLECTIONS[name] + (f", run {seed + 1}" if seed else ""),
                         f"{run['temperature']:.2f}",
                         f"{run['ece_before']:.3f} → {run['ece']:.3f}",
                         f"{run['ece_floor']:.3f}", f"{run['nll_before']:.3f} → {run['nll']:.3f}",
                         percent(run["coverage"]),
                         percent(run["accuracy_answered"]) if run.get("accuracy_answered")
                         is not None else "-"])
    header = ["default recipe on", "temperature", "ECE before → after", "ECE floor",
              "NLL before → after", "answered", "right when answered"]
    return table(header, rows) + source(results, *names)


COLLECTIONS = {"recipes_devset": "devset (15 painters)",
               "recipes_subsample": "7 × 100 subsample"}


# --- Unknown artists ----------------------------------------------------------------------


def open_set(results: Results) -> str:
    names = runs_of(results, "open_set")
    if not names:
        raise KeyError("open_set_seed0")
    rows, met = [], 0
    for name in names:
        result = results.result(name)
        targets = result["targets"]
        all_met = all(target["met"] for target in targets.values())
        met += all_met
        rows.append([name.removeprefix("open_set_"), ", ".join(result["held_out"]),
                     percent(result["known_accuracy"]),
                     f"{targets['auroc']['value']:.3f} ({targets['auroc']['score']})",
                     percent(result["rule"]["unknown_rejected"]),
                     percent(result["rule"]["known_rejected"]), "yes" if all_met else "no"])
    first = results.result(names[0])["targets"]
    header = ["draw", "held-out painters", "known accuracy", "best AUROC",
              "unknown said unknown", "known said unknown", "all targets"]
    summary = (f"\nAll three targets (AUROC ≥ {first['auroc']['limit']}, ≥ "
               f"{percent(first['unknown_rejected']['limit'], 0)} of unknown paintings "
               f"rejected, ≤ {percent(first['known_rejected']['limit'], 0)} of known) met on "
               f"{met} of {len(names)} draws.\n")
    return table(header, rows) + summary + source(results, *names)


# --- Speed ----------------------------------------------------------------------------------


PIPELINE_STAGES = {"a": "the original recipe's Keras layers (decode, 5 `Random*`, rescale)",
                   "b": "decode only", "c": "`create_split`, no augmentation",
                   "d": "`create_split`, full augmentation (one fused warp + contrast)"}


def pipeline_speed(results: Results) -> str:
    result = results.result("pipeline_devset")
    rows = [[text, number(result[stage]), f"{result[f'{stage}_cpu_ms']:.2f}"]
            for stage, text in PIPELINE_STAGES.items() if stage in result]
    ratio = (f"\nFull augmentation against the Keras layers: × {result['d_over_a']:.1f} "
             f"images/s (× {result['cpu_d_over_a']:.1f} per CPU second).\n"
             if "d_over_a" in result else "")
    return (table(["stage", "images/s", "CPU ms per image"], rows) + ratio
            + source(results, "pipeline_devset"))


def serving_speed(results: Results) -> str:
    names = runs_of(results, "serving")
    if not names:
        raise KeyError("serving_devset")
    rows = []
    for name in names:
        r = results.result(name)
        rows.append([name.removeprefix("serving_").replace("_", " "), str(r["views"]),
                     f"{r['bytes_cpu_ms_per_image']:.1f}", number(r["bytes_images_per_s"]),
                     f"{r['p50_ms']:.0f} / {r['p95_ms']:.0f}",
                     f"× {r['baseline_cost_ratio']:.2f}" if "baseline_cost_ratio" in r else "-"])
    header = ["export", "views", "CPU ms per painting", "paintings/s (batches)",
              "one painting p50 / p95 ms", "cost against one view"]
    return table(header, rows) + source(results, *names)


def app_speed(results: Results) -> str:
    result = results.result("app_devset")
    rows = [[row["path"], str(row["batch"]), str(row["clients"]), number(row["images_per_s"]),
             f"{row['p50_ms']:.0f} / {row['p95_ms']:.0f}"] for row in result["rows"]]
    out = table(["path", "images a request", "clients", "images/s", "p50 / p95 ms"], rows)
    costs = result.get("signature_costs") or {}
    if costs:
        out += "\n" + table(["signature", "CPU ms per image"],
                            [[f"`{name}`", f"{cost['ms_per_image']:.1f}"]
                             for name, cost in costs.items()])
    return out + source(results, "app_devset")


# --- Index --------------------------------------------------------------------------------


def results_index(results: Results) -> str:
    rows = [[f"`results/{name}.json`", document["benchmark"], f"`{document['command']}`",
             str(document.get("commit") or "-")] for name, document in results.items()]
    return table(["file", "benchmark", "command", "commit"], rows)


# --- The README's headline -----------------------------------------------------------------


def _accuracy_row(results: Results, name: str, what: str, link: str) -> list[str]:
    variants = results.result(name)
    first, *rest = variants
    default = variants.get("default") or variants[rest[0]]
    seeds = len(default["runs"])
    return [what, f"{percent(default['test_accuracy'])} against the original recipe's "
                  f"{percent(variants[first]['test_accuracy'])}, at its CPU budget"
                  + (f" ({seeds} seeds)" if seeds > 1 else ""), link]


def _headline_rows(results: Results) -> list[list[str]]:
    rows = []
    if "recipes_devset" in results:
        rows.append(_accuracy_row(results, "recipes_devset", "Accuracy, 15 painters "
                                  "(devset)", "[recipes](docs/recipes.md#how-the-default-was-chosen)"))
    if "recipes_subsample" in results:
        rows.append(_accuracy_row(results, "recipes_subsample", "Accuracy, 7 painters × 100 "
                                  "paintings", "[recipes](docs/recipes.md#how-the-default-was-chosen)"))
    if "recipes_devset" in results:
        run = results.result("recipes_devset")["default"]["runs"][0]
        if "ece" in run:
            rows.append(["Calibration, devset", f"ECE {run['ece_before']:.3f} → {run['ece']:.3f}"
                         f" (a calibrated model would show {run['ece_floor']:.3f})",
                         "[confidence](docs/confidence.md)"])
    draws = runs_of(results, "open_set")
    if draws:
        met = sum(all(t["met"] for t in results.result(n)["targets"].values()) for n in draws)
        aurocs = [results.result(n)["targets"]["auroc"]["value"] for n in draws]
        rows.append(["Unknown painters (held-out draws)", f"all three targets on {met} of "
                     f"{len(draws)} draws; AUROC {sum(aurocs) / len(aurocs):.3f} on average",
                     "[confidence](docs/confidence.md)"])
    if "enroll" in results:
        goal_row = results.result("enroll")["summary"].get("10")
        if goal_row:
            rows.append(["A new painter from 10 paintings", f"{percent(goal_row['named'])} of its "
                         f"other paintings named; known accuracy {points(-goal_row['known_drop'])}"
                         f"; {goal_row['seconds_per_enrolment']:.0f} s", "[serving](docs/serving.md)"])
    if "verify" in results:
        pairs = results.result("verify")["summary"]["unseen_pairs"]
        rows.append(["Same hand? Painters never seen", f"AUROC {pairs['auroc']:.3f}",
                     "[serving](docs/serving.md)"])
    if "pipeline_devset" in results:
        r = results.result("pipeline_devset")
        rows.append(["Input pipeline, full augmentation", f"{number(r['d'])} images/s, × "
                     f"{r['d_over_a']:.1f} the original Keras layers", "[pipeline](docs/pipeline.md)"])
    serving = runs_of(results, "serving")
    if serving:
        r = results.result(serving[0])
        rows.append(["Serving, one painting", f"{r['bytes_cpu_ms_per_image']:.0f} CPU ms "
                     f"({number(r['bytes_images_per_s'])} paintings/s in batches)",
                     "[serving](docs/serving.md)"])
    return rows


def headline(results: Results) -> str:
    rows = _headline_rows(results)
    if not rows:
        raise KeyError("recipes_devset")
    return table(["", "measured", "how"], rows) + (
        "\nEvery figure links to the command that made it; "
        "[docs/results.md](docs/results.md) lists them all.\n")


# --- Open world: enrolment and verification ---------------------------------------------


def enroll(results: Results) -> str:
    result = results.result("enroll")
    rows = [[k, percent(row["named"]), percent(row["named_min"]), points(-row["known_drop"]),
             percent(row["new_unknown"]), percent(row["known_unknown"]),
             f"{row['seconds_per_enrolment']:.1f}"] for k, row in result["summary"].items()]
    draws = result["draws"].values()
    before = [[percent(sum(d["before"][key] for d in draws) / len(draws))
               for key in ("new_unknown", "known_unknown")]]
    out = table(["paintings each", "other paintings named", "worst draw",
                 "known accuracy", "new painters' 'unknown'", "known 'unknown'",
                 "seconds each"], rows)
    out += (f"\nBefore enrolment the rule answered \"unknown\" for {before[0][0]} of the "
            f"held-out painters' paintings and {before[0][1]} of the known test paintings "
            f"({len(result['draws'])} draws).\n")
    if result.get("retrained"):
        retrained = list(result["retrained"].values())
        accuracy = sum(r["held_out_accuracy"] for r in retrained) / len(retrained)
        out += (f"Retraining the recipe with those painters included instead: "
                f"{percent(accuracy)} of their test paintings named, "
                f"{number(retrained[0]['train_cpu_seconds'])} CPU s of training.\n")
    return out + source(results, "enroll")


def verify(results: Results) -> str:
    result = results.result("verify")
    names = {"unseen_pairs": "pairs, painters never seen", "known_pairs": "pairs, known painters",
             "claims": "claims on known painters' paintings"}
    rows = [[names[kind], _fixed(row["auroc"], 3), _fixed(row["auroc_min"], 3),
             _share(row["false_accepted"]), _share(row["false_rejected"])]
            for kind, row in result["summary"].items()]
    return (table(["question", "AUROC", "worst draw", "false accepts", "false rejects"], rows)
            + source(results, "verify"))


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else percent(value)
