"""The face track of a whole video: where the face and its lower half are in every source frame.

A track is computed once per (video content, face choice) in one forward pass — detector, then
the 468-point mesh on the detected box — smoothed over time, and cached on disk, so an avatar
video that comes back with a new audio skips face analysis entirely. Rendering then only reads
the track; it never runs a face model.

Only the landmarks the renderer needs are kept (face oval, brows, lips, nose), which keeps a
track small (≈0.5 kB a frame) and its cache file cheap to load.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .mesh import FACE_OVAL, LIPS_OUTER

TRACK_VERSION = 1
"""Bump when analysis changes, so stale cache files are recomputed instead of reused."""

_BROWS = [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
_NOSE = [1, 2, 98, 327]
KEPT = np.array(list(FACE_OVAL) + list(LIPS_OUTER) + _BROWS + _NOSE)
"""Mesh indices stored per frame; the slices below address them inside a track's ``points``."""
OVAL = slice(0, len(FACE_OVAL))
LIPS = slice(OVAL.stop, OVAL.stop + len(LIPS_OUTER))
BROWS = slice(LIPS.stop, LIPS.stop + len(_BROWS))
NOSE = slice(BROWS.stop, BROWS.stop + len(_NOSE))

MIN_PRESENCE = 0.5
"""Mesh face-presence probability under which a detection is treated as no face."""
CUT_IOU = 0.3
"""Consecutive face boxes overlapping less than this are a shot cut: smoothing restarts there."""


@dataclass(frozen=True)
class FaceTrack:
    """Per source frame: the face box (S3FD-like: brows to chin) and kept landmarks, smoothed.

    ``boxes`` is (N, 4) float32 x0, y0, x1, y1 in frame pixels, NaN where the frame has no face;
    ``points`` is (N, len(KEPT), 2) float32, NaN likewise; ``fade`` is (N,) float32 in 0..1,
    the blend weight that ramps in and out where a face appears or disappears.
    """

    boxes: np.ndarray
    points: np.ndarray
    fade: np.ndarray

    @property
    def has_face(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])

    def __len__(self) -> int:
        return len(self.boxes)

    def save(self, path: Path) -> None:
        """Write atomically: a cache file is either whole or absent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, version=TRACK_VERSION, boxes=self.boxes, points=self.points, fade=self.fade)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "FaceTrack | None":
        """The cached track, or None when absent, unreadable or from another analysis version."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != TRACK_VERSION:
                    return None
                return cls(data["boxes"], data["points"], data["fade"])
        except (OSError, KeyError, ValueError):
            return None


Locate = Callable[[Sequence[np.ndarray]], list[np.ndarray | None]]
"""Frames (BGR) → for each, the kept landmarks (len(KEPT), 2) of the chosen face, or None."""


def analyse(frames: Iterable[np.ndarray], locate: Locate, *, smooth_frames: int,
            batch_size: int = 32, fade_frames: int = 4,
            on_batch: Callable[[int], None] | None = None) -> FaceTrack:
    """Locate the face in every frame (in batches), then smooth and derive boxes and fades.

    Memory holds one batch of frames plus the (small) landmark arrays, whatever the video length.
    ``on_batch`` is told the number of frames analysed so far (progress, cancellation).
    """
    found: list[np.ndarray | None] = []
    for chunk in _batched(frames, batch_size):
        found.extend(locate(chunk))
        if on_batch:
            on_batch(len(found))
    n = len(found)
    points = np.full((n, len(KEPT), 2), np.nan, np.float32)
    for i, pts in enumerate(found):
        if pts is not None:
            points[i] = pts
    raw_boxes = _boxes_from_points(points)
    segments = _segments(raw_boxes)
    for start, stop in segments:
        points[start:stop] = _moving_average(points[start:stop], smooth_frames)
    return FaceTrack(_boxes_from_points(points), points, _fades(raw_boxes, fade_frames))


def _batched(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    chunk: list[np.ndarray] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _boxes_from_points(points: np.ndarray) -> np.ndarray:
    """S3FD-like face boxes from landmarks: cheek to cheek, a little above the brows to the chin.

    Wav2Lip was trained on S3FD boxes (then padded by ``pads``); this reproduces their extent from
    the mesh so the 96×96 crop the network sees has the proportions it was trained on.
    """
    oval, brows = points[:, OVAL], points[:, BROWS]
    with np.errstate(invalid="ignore"):
        x0 = np.min(oval[..., 0], axis=1)
        x1 = np.max(oval[..., 0], axis=1)
        chin = np.max(oval[..., 1], axis=1)
        brow = np.min(brows[..., 1], axis=1)
    top = brow - 0.15 * (chin - brow)
    return np.stack([x0, top, x1, chin], axis=1).astype(np.float32)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _segments(boxes: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive face frames with no cut between them, as (start, stop)."""
    segments: list[tuple[int, int]] = []
    start = None
    for i in range(len(boxes)):
        present = not np.isnan(boxes[i, 0])
        if start is not None and (not present or box_iou(boxes[i - 1], boxes[i]) < CUT_IOU):
            segments.append((start, i))
            start = None
        if present and start is None:
            start = i
    if start is not None:
        segments.append((start, len(boxes)))
    return segments


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0, the window shrinking at the ends (no edge bias)."""
    if window <= 1 or len(values) < 2:
        return values
    half = window // 2
    csum = np.concatenate([np.zeros_like(values[:1]), np.cumsum(values, axis=0)])
    idx = np.arange(len(values))
    lo = np.clip(idx - half, 0, len(values))
    hi = np.clip(idx + half + 1, 0, len(values))
    count = (hi - lo).reshape((-1,) + (1,) * (values.ndim - 1))
    return ((csum[hi] - csum[lo]) / count).astype(values.dtype)


def _fades(boxes: np.ndarray, fade_frames: int) -> np.ndarray:
    """Blend weights: 1 inside a run of face frames, ramping over ``fade_frames`` next to frames
    without a face (not at the video's own start or end, where there is nothing to fade from)."""
    present = ~np.isnan(boxes[:, 0])
    n = len(present)
    fade = np.zeros(n, np.float32)
    i = 0
    while i < n:
        if not present[i]:
            i += 1
            continue
        j = i
        while j < n and present[j]:
            j += 1
        k = np.arange(j - i, dtype=np.float32)
        ramp_in = (k + 1) / (fade_frames + 1) if i > 0 else np.ones_like(k)
        ramp_out = (j - i - k) / (fade_frames + 1) if j < n else np.ones_like(k)
        fade[i:j] = np.minimum(1.0, np.minimum(ramp_in, ramp_out))
        i = j
    return fade
