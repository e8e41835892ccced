"""Image files named on a command line: files, folders (searched recursively) and globs."""

import glob
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def expand(patterns: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursive) and globs -> (image files, [(pattern, error)])."""
    files, errors = [], []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches or not os.path.exists(matches[0]):
            errors.append((pattern, "no such file or directory"))
            continue
        for path in matches:
            if os.path.isdir(path):
                files += sorted(
                    os.path.join(root, name)
                    for root, _, names in os.walk(path)
                    for name in names
                    if name.lower().endswith(IMAGE_EXTENSIONS)
                )
            else:
                files.append(path)
    return files, errors
