"""A ZIP archive written while it is sent: no temporary copy, any size, Unicode names.

Python's :mod:`zipfile` writes to a stream it cannot seek in (sizes and CRCs then follow each
file in a data descriptor, and ZIP64 is used where a file needs it); names that are not ASCII
get the UTF-8 flag, so every unzip tool shows them right. Files are *stored*, not compressed:
the archive holds H.264 videos, which do not shrink, and storing costs no CPU on the service
that is busy rendering. That is all a streamed download needs, so no extra package.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

CHUNK = 1 << 20


class _Pipe:
    """A write-only, unseekable file object whose bytes are collected until drained."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        yield from parts


def zip_stream(entries: Iterable[tuple[str, Path]], chunk: int = CHUNK) -> Iterator[bytes]:
    """The bytes of a ZIP holding each ``(name in the archive, file)``, a chunk at a time."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]
        for name, path in entries:
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_STORED
            with path.open("rb") as source, archive.open(info, "w") as target:
                while block := source.read(chunk):
                    target.write(block)
                    yield from pipe.drain()
            yield from pipe.drain()
    yield from pipe.drain()


def content_disposition(filename: str, inline: bool = False) -> str:
    """A Content-Disposition header any browser reads right, Unicode included (RFC 6266/5987)."""
    fallback = filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
