"""Artist display names from folder names: mojibake repair, spaces, Unicode NFC."""

import re
import unicodedata

# How a UTF-8 name gets mangled: its bytes decoded with one of these code
# pages. cp437 is what zip tools assume without the UTF-8 flag (the Kaggle
# zip's `Albrecht_Du╠êrer`); cp1252 / latin-1 / mac_roman are what Windows,
# the web and old Macs assume.
_MOJIBAKE_CODECS = ("cp437", "cp1252", "latin-1", "mac_roman")
# A name mangled twice (zipped, unzipped wrongly, zipped again) needs two passes.
_MAX_REPAIRS = 2
# Raw bytes that are not UTF-8 (kept by Linux as surrogate escapes): cp1252 is
# the likeliest source, and cp437 maps every byte, so it is the last resort.
_RAW_BYTE_CODECS = ("utf-8", "cp1252", "cp437")


def printable(text: str) -> str:
    """`text` with undecodable file-name bytes (surrogate escapes) shown as `\\xNN`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _decode_raw_bytes(text: str) -> str:
    raw = text.encode("utf-8", "surrogateescape")
    for codec in _RAW_BYTE_CODECS:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            continue
    return printable(text)  # Unreachable: cp437 decodes any byte.


def _undo_mojibake_once(text: str) -> str | None:
    """UTF-8 bytes that were decoded with a wrong code page, decoded right; else None.

    Re-encoding with the wrong code page must give *valid* UTF-8, which a
    correctly spelled name almost never does (`Dürer` -> b"D\\x81rer" is not).
    """
    for codec in _MOJIBAKE_CODECS:
        try:
            fixed = text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
        if fixed != text:
            return fixed
    return None


def repair(text: str) -> str:
    """Undoes mis-decoding and returns NFC, so NFD (macOS) names match NFC twins."""
    if any("\udc80" <= char <= "\udcff" for char in text):
        text = _decode_raw_bytes(text)
    for _ in range(_MAX_REPAIRS):
        if text.isascii():
            break
        fixed = _undo_mojibake_once(text)
        if fixed is None:
            break
        text = fixed
    return unicodedata.normalize("NFC", text)


def display_name(folder_name: str) -> str:
    """`Albrecht_Du╠êrer` -> `Albrecht Dürer`: repaired, underscores to spaces."""
    return " ".join(repair(folder_name).replace("_", " ").split())


def match_key(name: str) -> str:
    """A loose key that matches a folder to its `artists.csv` row.

    Case, accents and punctuation are ignored: `Albrecht_Durer`,
    `ALBRECHT DÜRER` and `Albrecht Dürer` are one artist.
    """
    decomposed = unicodedata.normalize("NFKD", display_name(name))
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(re.sub(r"[\W_]+", " ", bare.casefold()).split())
