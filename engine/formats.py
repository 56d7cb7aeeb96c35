"""Which input files the engine reads: the one list of media suffixes, and the empty-file check.

The daemon sorts a job folder's files into roles with these lists, and the engine decides by
the same lists whether a face input is a still or a video, so a format the README promises
cannot be refused by one side and accepted by the other. Every suffix here is decoded by the
PyAV/OpenCV build the package depends on (``tests/test_formats.py`` writes and reads each one).
"""

from __future__ import annotations

from pathlib import Path

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".aac", ".flac", ".ogg")
"""Speech recordings (any of them may also be a video's sound track, but these are audio-only)."""

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")
"""Face videos: MP4/QuickTime, Matroska/WebM, AVI, MPEG-1/2 program streams, MPEG transport streams."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
"""Face photos, read as one still picture (OpenCV applies a JPEG's EXIF orientation)."""


def empty_file_message(path: Path, kind: str) -> str | None:
    """A plain sentence when ``path`` holds no bytes at all, else None.

    FFmpeg calls an empty file "Invalid data found when processing input", which sends people
    looking for a damaged file; the usual cause is a copy that wrote the name but no content.
    """
    try:
        empty = path.stat().st_size == 0
    except OSError:
        return None  # missing or unreadable: the decoder says so in its own words
    if not empty:
        return None
    return (f"The {kind} '{path.name}' is empty (0 bytes): the copy probably did not finish. "
            "Copy the file again.")
