"""A TensorFlow error as the one line a user needs (no TensorFlow import: callers that
start fast, predict.py and serve.py, use it before or without loading TensorFlow)."""

import re

# Lines of a TensorFlow error message that frame the op's own text.
FRAMING = ("Graph execution error", "Detected at node", "<stack traces", "[[", "{{node")


def error_message(error: Exception) -> str:
    """The op's own text, one line: what TensorFlow Serving answers. A refused request
    element keeps its "images[i]: " prefix (`without_index` drops it)."""
    text = getattr(error, "message", None) or str(error)
    found = re.search(r"assertion failed: \[(.*)\]", text)
    if found:
        line = found.group(1)
    else:  # A decoder's own error: skip TensorFlow's framing lines.
        lines = [line.strip() for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith(FRAMING)]
        line = lines[0] if lines else text.strip()
    line = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", line)


def without_index(message: str) -> str:
    """"images[3]: empty input" -> "empty input": the message of one file."""
    return re.sub(r"^images\[\d+\]:\s*", "", message)
