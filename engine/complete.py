"""Does a media file look complete? Checks shared by the video and audio readers and the daemon.

Windows Explorer (and Samba on its behalf) sets a copied file's final size first and fills it in
afterwards, so a half-copied file can have its full size and a tail of zero bytes. No compressed
media format ends in kilobytes of zeros: MP4/MOV end with their index or the last coded frame,
Matroska/WebM with cues or tags, AVI with its index, MPEG-TS with sync bytes every 188, MP3 with
frames or a tag, JPEG and PNG with their end markers. Uncompressed PCM (WAV, AIFF) can end in
digital silence, which is zeros too, so those are never judged by their tail.
"""

from __future__ import annotations

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
