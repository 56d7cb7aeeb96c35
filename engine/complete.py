"""Does a media file look complete? Checks shared by the video and audio readers and the daemon.

Windows Explorer (and Samba on its behalf) sets a copied file's final size first and fills it in
afterwards, so a half-copied file can have its full size and a tail of zero bytes. No compressed
media format ends in kilobytes of zeros: MP4/MOV end with their index or the last coded frame,
Matroska/WebM with cues or tags, AVI with its index, MPEG-TS with sync bytes every 188, MP3 with
frames or a tag, JPEG and PNG with their end markers. Uncompressed PCM (WAV, AIFF) can end in
digital silence, which is zeros too, so those are never judged by their tail.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

TAIL_BYTES = 4096
"""How much of a file's end is read: a few disk blocks, enough to cover a cluster-sized hole."""

PCM_SUFFIXES = frozenset({".wav", ".wave", ".aif", ".aiff", ".aifc", ".w64", ".au"})
"""Uncompressed audio: a silent ending is legitimately all zeros."""

MISSING_TOLERANCE_S = 0.5
"""Decoded media may end this much (or :data:`MISSING_TOLERANCE_SHARE` of the duration, if more)
before the end its container declares: rounding, encoder delay and a last frame's duration."""
MISSING_TOLERANCE_SHARE = 0.02


def has_zero_tail(path: str | os.PathLike[str]) -> bool:
    """True when the last :data:`TAIL_BYTES` of a non-empty compressed media file are all zero
    bytes (the unwritten part of a preallocated copy). PCM audio is never judged by its tail."""
    path = Path(path)
    if path.suffix.lower() in PCM_SUFFIXES:
        return False
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return False
            fh.seek(max(0, size - TAIL_BYTES))
            return not fh.read(TAIL_BYTES).strip(b"\0")
    except OSError:
        return False


def missing_seconds(declared_s: float, decoded_s: float) -> float:
    """Seconds of media the container declares but that could not be read, beyond the tolerance
    (0 when the file is complete as far as can be told)."""
    tolerance = max(MISSING_TOLERANCE_S, MISSING_TOLERANCE_SHARE * declared_s)
    return declared_s - decoded_s if declared_s - decoded_s > tolerance else 0.0


DECLARING_FORMATS = frozenset({"mov", "mp4", "matroska", "webm", "avi", "wav", "w64", "aiff", "flac"})
"""Containers whose header states the real length (sample tables, segment duration, frame or
sample counts). Others (MPEG-TS, raw streams, MP3 without a Xing header) give FFmpeg only an
estimate from timestamps or the bit rate, which must not be mistaken for missing data."""


def declares_length(format_name: str) -> bool:
    """Whether a container of FFmpeg format ``format_name`` ("mov,mp4,m4a,...") states its length."""
    return not DECLARING_FORMATS.isdisjoint(format_name.split(","))


_ISO_BOXES = frozenset({b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid",
                        b"moof", b"sidx", b"meta", b"mfra", b"pdin", b"prft", b"emsg"})
_RIFF_PLACEHOLDERS = frozenset({0, 0xFFFFFFFF})
"""RIFF sizes a streaming writer leaves when it cannot go back and fill in the real one."""


def cut_short(path: str | os.PathLike[str]) -> str | None:
    """Why the file's own structure says it is incomplete, or None: an MP4/MOV/M4A whose boxes,
    or a WAV/AVI whose RIFF header, reach past the end of the file. Reads a few headers only,
    so it is cheap enough to run before every open. (FFmpeg clamps a WAV's length to the bytes
    present, so a half-copied WAV would otherwise decode as a short but valid one.)"""
    try:
        with Path(path).open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(12)
            if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"AVI "):
                declared = int.from_bytes(head[4:8], "little")
                if declared not in _RIFF_PLACEHOLDERS and declared + 8 > size:
                    return f"its header says {declared + 8} bytes but only {size} are there"
                return None
            if head[4:8] in _ISO_BOXES:
                return _iso_cut_short(fh, size)
    except OSError:
        return None
    return None


def _iso_cut_short(fh: io.BufferedReader, size: int) -> str | None:
    offset = 0
    while offset + 8 <= size:
        fh.seek(offset)
        header = fh.read(16)
        box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if box_size == 1:
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # "to the end of the file"
            return None
        if box_size < 8 or kind not in _ISO_BOXES:
            return None  # not a box structure we understand (garbage, damage): leave it to the decoder
        if offset + box_size > size:
            return f"its '{kind.decode('latin-1')}' section needs {offset + box_size} bytes but only {size} are there"
        offset += box_size
    return None
