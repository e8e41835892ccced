"""Regenerates every results table in README.md and docs/ from the JSON in results/.

    python -m tools.results            # rewrite the tables (make results)
    python -m tools.results --check    # exit 1 naming each table that differs from its JSON

A benchmark run with `--json_out=results/NAME.json` writes its result beside
the command, commit and machine that made it (`benchmarks/json_result.py`).
In a Markdown file, a table is the text between

    <!-- results: TABLE -->
    <!-- /results -->

and TABLE names a function of `tools/results_tables.py`, which reads the
results it needs and returns the Markdown. Nothing between the markers is
written by hand: a figure cannot drift from the run it came from.
"""

import glob
import json
import os
import re
import sys

from tools import results_tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = "results"
DOCUMENTS = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)",
                   re.S)


class ResultsError(ValueError):
    """A table that cannot be made: an unknown table, or a results file it needs is missing."""


def load_results(root: str = ROOT) -> dict[str, dict]:
    """{file name without .json: its document} for every file in results/."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, RESULTS_DIR, "*.json"))):
        with open(path, encoding="utf-8") as f:
            found[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return found


def documents(root: str = ROOT) -> list[str]:
    return sorted(path for pattern in DOCUMENTS for path in glob.glob(os.path.join(root, pattern)))


def render(text: str, results: dict[str, dict], *, where: str = "") -> str:
    """`text` with every results block made anew from `results`."""

    def table(match: re.Match) -> str:
        name = match["name"]
        make = getattr(results_tables, name.replace("-", "_"), None)
        if make is None or name.startswith("_"):
            raise ResultsError(f"{where}: no table named {name!r} in tools/results_tables.py")
        try:
            body = make(results_tables.Results(results)).rstrip("\n") + "\n"
        except KeyError as e:
            raise ResultsError(f"{where}: table {name!r} needs {RESULTS_DIR}/{e.args[0]}.json "
                               "(run the benchmark its row names with --json_out)") from None
        return f"{match[1]}{body}{match[4]}"

    return BLOCK.sub(table, text)


def stale(root: str = ROOT) -> list[str]:
    """The documents (relative paths) whose tables differ from what results/ says."""
    results = load_results(root)
    out = []
    for path in documents(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if render(text, results, where=path) != text:
            out.append(os.path.relpath(path, root))
    return out


def write(root: str = ROOT) -> list[str]:
    """Rewrites the tables in place; returns the documents that changed."""
    results, changed = load_results(root), []
    for path in documents(root):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render(text, results, where=path)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            changed.append(os.path.relpath(path, root))
    return changed


def main(argv: list[str]) -> int:
    if argv[1:] not in ([], ["--check"]):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[1:] == ["--check"]:
            if out_of_date := stale():
                print(f"results tables differ from {RESULTS_DIR}/ in: {', '.join(out_of_date)}; "
                      "run `make results`", file=sys.stderr)
                return 1
            return 0
        changed = write()
    except ResultsError as e:
        print(f"tools.results: error: {e}", file=sys.stderr)
        return 1
    print(f"Rewrote the tables of {', '.join(changed)}" if changed else "Every table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
