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
