"""File names the service writes: safe to open from Windows, macOS and Linux, never colliding.

Users type whatever they like (spaces, emoji, accents typed on a Mac arrive decomposed as NFD,
names that differ only in case on a Linux share). What we *read* we take as it is; what we
*write* goes through :func:`windows_safe` and :func:`unique_name`, because the same share is
opened from Windows, where ``CON.mp4``, ``a:b.mp4`` or ``name.`` cannot be opened at all, and
where ``Clip.mp4`` and ``clip.mp4`` are the same file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_BYTES = 200
"""Well under the 255-byte limit of most file systems, leaving room for " (12)" and temp prefixes."""


def readable(name: str) -> str:
    """``name`` as text that can be stored, shown and written: a byte that is not UTF-8 (Python
    sees it as a surrogate escape) is read as Windows-1252, the encoding a share with the wrong
    charset setting or an old client writes (``Caf\\xe9`` becomes ``Café``); a byte that has no
    meaning there becomes U+FFFD. Valid names come back unchanged."""
    return "".join(_cp1252(ch) if "\udc80" <= ch <= "\udcff" else ch for ch in name)


def _cp1252(escape: str) -> str:
    return bytes([ord(escape) - 0xDC00]).decode("cp1252", "replace")


def windows_safe(name: str, fallback: str = "untitled") -> str:
    """Return ``name`` as one path component every client can open: UTF-8, NFC, no forbidden
    characters, no trailing dots or spaces, no reserved device name, bounded length."""
    name = unicodedata.normalize("NFC", readable(name))
    name = _FORBIDDEN.sub("_", name).strip().rstrip(". ")
    if not name or name in {".", ".."}:
        name = fallback
    if name.partition(".")[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name
    return _truncate(name)


def _truncate(name: str) -> str:
    """Cut the stem (never the extension) so the UTF-8 name fits :data:`_MAX_BYTES`."""
    if len(name.encode()) <= _MAX_BYTES:
        return name
    path = Path(name)
    ext = path.suffix if len(path.suffix.encode()) < 20 else ""
    stem = name[: len(name) - len(ext)]
    while len((stem + ext).encode()) > _MAX_BYTES:
        stem = stem[:-1]
    return stem.rstrip(". ") + ext


def fold(name: str) -> str:
    """The key two names collide on when a case-insensitive, normalising client opens them."""
    return unicodedata.normalize("NFC", name).casefold()


def unique_name(wanted: str, taken: Iterable[str]) -> str:
    """``wanted``, or ``stem (2).ext``, ``stem (3).ext``… — the first that no name in ``taken``
    matches case- and normalisation-insensitively. Never overwrite: always pick a new name."""
    used = {fold(t) for t in taken}
    if fold(wanted) not in used:
        return wanted
    path = Path(wanted)
    stem, ext = (path.stem, path.suffix) if path.suffix else (wanted, "")
    n = 2
    while fold(f"{stem} ({n}){ext}") in used:
        n += 1
    return f"{stem} ({n}){ext}"


def unique_in_dir(parent: Path, wanted: str, reserved: Iterable[str] = ()) -> str:
    """A name in ``parent`` that collides with nothing there now, nor with ``reserved``."""
    existing = [p.name for p in parent.iterdir()] if parent.is_dir() else []
    return unique_name(wanted, [*existing, *reserved])
