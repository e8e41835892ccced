"""How every benchmark ends: its result as the last line printed, one JSON object, and with
`--json_out` the same result in a file (e.g. under results/) beside the command that made it,
the commit it ran at and the machine it ran on: what `tools/results.py` builds tables from."""

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys

RESULTS_FORMAT = 1


def command() -> str:
    """This process's command line as a user would type it from the repository's top."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:  # python -m benchmarks.name
        return shlex.join(["python", "-m", spec.name, *argv[1:]])
    return shlex.join(["python", os.path.relpath(argv[0]) if argv else "?", *argv[1:]])


def commit() -> str | None:
    """The checkout's commit, with "+changes" when the working tree differs from it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=30).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if head and dirty else (head or None)


def machine() -> dict:
    """What the figures depend on: processor, cores, memory, Python and TensorFlow."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    tensorflow = sys.modules.get("tensorflow")
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "memory_gib": memory_gib, "system": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": getattr(tensorflow, "__version__", None)}


# The code that runs is the checkout's as the benchmark starts, not as it ends hours later.
STARTED_AT = commit()


def document(result: dict) -> dict:
    """The file `--json_out` writes: the result with where it came from."""
    benchmark = os.path.splitext(os.path.basename(sys.argv[0] or "?"))[0]
    return {"format": RESULTS_FORMAT, "benchmark": benchmark, "command": command(),
            "commit": STARTED_AT, "date": datetime.date.today().isoformat(),
            "machine": machine(), "result": result}


def print_table(header: list[str], rows: list[list[str]], *, note: str = "") -> None:
    """A plain-text table before the JSON line: first column left-aligned, the rest right."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells) -> str:
        return "  ".join(str(cell).ljust(width) if i == 0 else str(cell).rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths)))

    print("\n" + line(header) + (f"   {note}" if note else ""))
    for row in rows:
        print(line(row))


def emit(result: dict, json_out: str | None) -> None:
    if json_out:
        os.makedirs(os.path.dirname(os.path.abspath(json_out)), exist_ok=True)
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(document(result), f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(json.dumps(result))
