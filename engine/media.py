"""The engine's video I/O in one import: probe, streaming decode, the frame schedule, the writer.

Decoding lives in :mod:`.video_in`, encoding and muxing in :mod:`.video_out`; this module adds the
one piece of policy between them: which source frame each output frame shows when the audio is
shorter or longer than the video.
"""

from __future__ import annotations

from .options import LOOP_MODES
from .video_in import STILL_SUFFIXES, ColorTags, VideoInfo, probe, read_frames, read_i420
from .video_out import VideoWriter

__all__ = ["STILL_SUFFIXES", "ColorTags", "VideoInfo", "VideoWriter", "frame_schedule", "probe",
           "read_frames", "read_i420"]


def frame_schedule(frame_count: int, target: int, mode: str = "pingpong") -> list[int]:
    """Source frame index for each of ``target`` output frames.

    Audio shorter than the video trims it (``0..target-1``). Longer audio repeats the video:
    ``pingpong`` plays it forth and back without showing the turning frames twice
    (``0..n-1, n-2..1, 0..``), so the motion never jumps; ``loop`` restarts it (``0..n-1, 0..``).
    :func:`read_frames` streams the forward runs and decodes the backward ones in chunks.
    """
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    if target < 0:
        raise ValueError(f"target must not be negative, got {target}")
    if mode not in LOOP_MODES:
        raise ValueError(f"mode must be one of {', '.join(LOOP_MODES)}; got {mode!r}")
    if target <= frame_count or frame_count == 1:
        return [min(i, frame_count - 1) for i in range(target)]
    if mode == "loop":
        return [i % frame_count for i in range(target)]
    period = 2 * frame_count - 2
    return [k if k < frame_count else period - k for k in (i % period for i in range(target))]
