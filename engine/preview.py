"""A preview of what a render will do, made in seconds before the long render starts.

For one video and the job's audio: a picture of a few frames spread over the video, each with
the crop box the network will see (green) and the region that will be re-drawn (the feathered
lower-face mask, tinted red), plus the figures a person needs to catch a wrong upload: frames
with and without a face, video and audio duration, and what happens to make them match (the
video is cut short, played forth and back, or looped). Face analysis is the expensive part; it
is the same face track the render uses, so with a cache it is not done twice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from . import media
from .blend import crop_rect, lower_face_mask
from .faces.track import FaceTrack
from .options import RenderOptions

SHOTS = 4
"""Frames in the preview picture."""
SHOT_HEIGHT = 240
"""Height of each frame in the picture (width follows the video's shape)."""


@dataclass(frozen=True)
class Preview:
    image: str
    """The preview picture (JPEG)."""
    frames: int
    frames_with_face: int
    video_s: float
    audio_s: float
    plan: str
    """``trim``, ``pingpong``, ``loop``, ``still`` or ``same``: how the video meets the audio's length."""
    summary: str
    """The figures above in one sentence, for people."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def plan(video_frames: int, output_frames: int, loop: str) -> str:
    if video_frames == 1:
        return "still"
    if output_frames < video_frames:
        return "trim"
    if output_frames == video_frames:
        return "same"
    return loop


def describe(video: str, frames: int, with_face: int, video_s: float, audio_s: float, how: str) -> str:
    matching = {"trim": f"the video is cut to the audio's {audio_s:.1f} s",
                "same": "they match",
                "still": f"the picture is shown for the audio's {audio_s:.1f} s",
                "pingpong": f"the video plays forth and back to fill the audio's {audio_s:.1f} s",
                "loop": f"the video restarts to fill the audio's {audio_s:.1f} s"}[how]
    faces = f"a face in {with_face} of {frames} frames" + (
        f" ({frames - with_face} without: shown unchanged)" if with_face < frames else "")
    return f"{video}: {faces}; video {video_s:.1f} s, audio {audio_s:.1f} s: {matching}."


def shot_indices(track: FaceTrack, count: int = SHOTS) -> list[int]:
    """Frames spread over the video, preferring frames with a face."""
    with_face = np.flatnonzero(track.has_face)
    pool = with_face if len(with_face) else np.arange(len(track))
    picks = np.linspace(0, len(pool) - 1, num=min(count, len(pool))).round().astype(int)
    return sorted({int(pool[i]) for i in picks})


def annotate(frame: np.ndarray, track: FaceTrack, index: int, options: RenderOptions) -> np.ndarray:
    """One frame with the crop box and the re-drawn region marked; scaled to ``SHOT_HEIGHT``."""
    shot = frame.copy()
    height, width = shot.shape[:2]
    if track.has_face[index]:
        rect = crop_rect(track.boxes[index], options.pads, width, height)
        x0, y0, x1, y1 = rect
        mask = lower_face_mask(track.points[index], rect)
        region = shot[y0:y1, x0:x1].astype(np.float32)
        red = np.zeros_like(region)
        red[..., 2] = 255
        alpha = (0.45 * mask)[..., None]
        shot[y0:y1, x0:x1] = (region * (1 - alpha) + red * alpha).astype(np.uint8)
        cv2.rectangle(shot, (x0, y0), (x1 - 1, y1 - 1), (0, 200, 0), max(2, width // 300))
    else:
        cv2.putText(shot, "no face", (10, max(30, height // 10)), cv2.FONT_HERSHEY_SIMPLEX, max(1.0, width / 640),
                    (0, 0, 255), max(2, width // 400))
    scale = SHOT_HEIGHT / height
    return cv2.resize(shot, (max(1, round(width * scale)), SHOT_HEIGHT), interpolation=cv2.INTER_AREA)


def write_preview(video: Path, info: media.VideoInfo, track: FaceTrack, audio_s: float, output_frames: int,
                  options: RenderOptions, image: Path) -> Preview:
    """Write the preview picture to ``image`` (atomically) and return the figures."""
    indices = shot_indices(track)
    shots = [annotate(frame, track, i, options) for i, frame in zip(indices, media.read_frames(video, info, indices),
                                                                     strict=True)]
    sheet = np.concatenate(shots, axis=1)
    ok, data = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("the preview picture could not be encoded")
    image.parent.mkdir(parents=True, exist_ok=True)
    tmp = image.with_name(f".{image.name}.tmp")
    tmp.write_bytes(data.tobytes())
    tmp.replace(image)
    frames, with_face = len(track), int(track.has_face.sum())
    how = plan(info.frame_count, output_frames, options.loop)
    return Preview(str(image), frames, with_face, info.duration_s, audio_s, how,
                   describe(video.name, frames, with_face, info.duration_s, audio_s, how))
