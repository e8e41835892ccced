"""How every benchmark ends: its result as the last line printed, one JSON object, and
the same (indented) in `--json_out` when given."""

import json


def emit(result: dict, json_out: str | None) -> None:
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
