"""The face track of a whole video: where the face and its lower half are in every source frame.

A track is computed once per (video content, face choice) in one forward pass — detector, then
the 468-point mesh on the detected box — smoothed over time, and cached on disk, so an avatar
video that comes back with a new audio skips face analysis entirely. Rendering then only reads
the track; it never runs a face model.

The track is computed offline over the whole video, so its smoothing looks both ways in time
(zero phase: no lag) within each shot, strongly while the head is still and lightly while it
moves. A face seen on fewer than :data:`MIN_RUN` frames in a row is dropped: a one-frame blend
between faceless frames is a flicker, never a lip-sync. Faces lying sideways or upside down are
stored upright (see :class:`FaceTrack`'s ``turns``).

Only the landmarks the renderer needs are kept (face oval, brows, lips, nose), which keeps a
track small (≈0.5 kB a frame) and its cache file cheap to load.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..musetalk.face import MESH_TO_68
from .mesh import FACE_OVAL, LIPS_OUTER
from .turns import turn_points, upright_turns

TRACK_VERSION = 3
"""Bump when analysis changes, so stale cache files are recomputed instead of reused."""

_BROWS = [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]
_NOSE = [1, 2, 98, 327]
KEPT = np.array(list(FACE_OVAL) + list(LIPS_OUTER) + _BROWS + _NOSE + list(MESH_TO_68))
"""Mesh indices stored per frame; the slices below address them inside a track's ``points``."""
OVAL = slice(0, len(FACE_OVAL))
LIPS = slice(OVAL.stop, OVAL.stop + len(LIPS_OUTER))
BROWS = slice(LIPS.stop, LIPS.stop + len(_BROWS))
NOSE = slice(BROWS.stop, BROWS.stop + len(_NOSE))
POINTS_68 = slice(NOSE.stop, NOSE.stop + len(MESH_TO_68))
"""The 68-point scheme MuseTalk's face box rule is written for (some repeat points above)."""

MIN_PRESENCE = 0.9999
"""Mesh face-presence probability under which the mesh is taken not to see a face (a logit of
9.2). Measured on the shared clips: a face cropped at its own roll scores logits of 15 to 46,
the same crop turned a quarter off at most 4 (the model then still says 0.98 at times, so the
usual 0.5 would follow a sideways face upright). A face upside down in its crop can score more,
which is why the locator orients a new face by comparing turns, not by this threshold."""
CUT_IOU = 0.3
"""Consecutive face boxes overlapping less than this are a shot cut: smoothing restarts there."""
MIN_RUN = 3
"""Frames in a row a face must be seen before it is re-drawn (shorter runs are dropped)."""
LIGHT_SIGMA = 1.5
"""Frames: the smoothing left while the head moves fast (landmark noise is still averaged)."""
FAST = 0.03
"""Face widths per frame from which the head counts as moving (smoothing at its lightest); slower,
the smoothing blends towards ``smooth_frames``. Measured on the shared talking heads, whose heads
drift at 0.002–0.008 face widths per frame while talking: the strong smoothing keeps their box
steps at 0.7–0.95 px, and a face that eases into and out of a motion of up to 6 px a frame is
followed within 1.2 px (a plain Gaussian as strong: 6 px off)."""


@dataclass(frozen=True)
class FaceTrack:
    """Per source frame: the face box (S3FD-like: brows to chin) and kept landmarks, smoothed.

    ``boxes`` is (N, 4) float32 x0, y0, x1, y1 in pixels, NaN where the frame has no face;
    ``points`` is (N, len(KEPT), 2) float32, NaN likewise; ``fade`` is (N,) float32 in 0..1,
    the blend weight that ramps in and out where a face appears or disappears.

    ``turns`` is (N,) int8, 0..3: the face in frame i is upright in ``np.rot90(frame, turns[i])``
    (turned counter-clockwise by that many quarters), and ``boxes[i]``/``points[i]`` are pixels
    of that turned view, not of the frame as stored. 0 for every face that is roughly upright;
    1 or 3 for a phone clip playing sideways. A renderer crops, generates and pastes on the view
    (a numpy view: pasting into it writes the frame).
    """

    boxes: np.ndarray
    points: np.ndarray
    fade: np.ndarray
    turns: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.turns is None:
            object.__setattr__(self, "turns", np.zeros(len(self.boxes), np.int8))

    @property
    def has_face(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])

    def __len__(self) -> int:
        return len(self.boxes)

    def save(self, path: Path) -> None:
        """Write atomically: a cache file is either whole or absent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        assert self.turns is not None  # __post_init__ fills it in
        with open(tmp, "wb") as f:
            np.savez(f, version=TRACK_VERSION, boxes=self.boxes, points=self.points, fade=self.fade,
                     turns=self.turns)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FaceTrack | None:
        """The cached track, or None when absent, unreadable or from another analysis version."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if int(data["version"]) != TRACK_VERSION:
                    return None
                return cls(data["boxes"], data["points"], data["fade"], data["turns"])
        except (OSError, KeyError, ValueError):
            return None


Locate = Callable[[Sequence[np.ndarray]], list[np.ndarray | None]]
"""Frames (BGR) → for each, the kept landmarks (len(KEPT), 2) of the chosen face, or None."""


def analyse(frames: Iterable[np.ndarray], locate: Locate, *, smooth_frames: int,
            batch_size: int = 32, fade_frames: int = 4,
            on_batch: Callable[[int], None] | None = None) -> FaceTrack:
    """Locate the face in every frame (in batches), then turn upright, smooth, derive boxes and fades.

    Memory holds one batch of frames plus the (small) landmark arrays, whatever the video length.
    ``on_batch`` is told the number of frames analysed so far (progress, cancellation).
    ``smooth_frames`` is the smoothing's reach (a Gaussian's sigma, in frames) while the head is
    still; 1 or less: none.
    """
    found: list[np.ndarray | None] = []
    height = width = 0
    for chunk in _batched(frames, batch_size):
        height, width = chunk[0].shape[:2]
        found.extend(locate(chunk))
        if on_batch:
            on_batch(len(found))
    n = len(found)
    points = np.full((n, len(KEPT), 2), np.nan, np.float32)
    for i, pts in enumerate(found):
        if pts is not None:
            points[i] = pts
    points[~_long_runs(~np.isnan(points[:, 0, 0]), min(MIN_RUN, n))] = np.nan
    turns = upright_turns(np.nan_to_num(_roll(points))).astype(np.int8)
    for start, stop in _segments(_extents(points), turns):
        turns[start:stop] = np.bincount(turns[start:stop], minlength=4).argmax()
        upright = turn_points(points[start:stop], int(turns[start]), width, height)
        points[start:stop] = _smooth(upright.astype(np.float64), smooth_frames)
    turns[np.isnan(points[:, 0, 0])] = 0
    boxes = _boxes_from_points(points)
    return FaceTrack(boxes, points, _fades(~np.isnan(boxes[:, 0]), fade_frames), turns)


def look_ahead(smooth_frames: int, fade_frames: int = 4) -> int:
    """Frames after the last one a render shows that :func:`analyse` must see, so that the track
    of the frames shown is what the whole video's would be: the analysis looks forward only this
    far (the smoothing's reach, a Gaussian of ``3 * smooth_frames`` frames on speeds taken over
    ``smooth_frames`` more; a run of :data:`MIN_RUN`; a fade). Locating is causal. Only a turned
    shot's majority turn looks further."""
    sigma = max(1, smooth_frames)
    return int(np.ceil(3 * sigma)) + int(np.ceil(sigma)) + 1 + MIN_RUN + fade_frames


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


def _long_runs(present: np.ndarray, min_run: int) -> np.ndarray:
    """``present`` with runs of True shorter than ``min_run`` set to False."""
    kept = present.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start < min_run:
            kept[start:stop] = False
    return kept


def _roll(points: np.ndarray) -> np.ndarray:
    """(N,) roll of each face in radians (as :func:`.mesh.roll`), from its brows: the line from
    the right brow's centre to the left one's (NaN without a face)."""
    brows = points[:, BROWS]
    half = brows.shape[1] // 2
    line = brows[:, half:].mean(axis=1) - brows[:, :half].mean(axis=1)
    return np.arctan2(line[:, 1], line[:, 0])


def _extents(points: np.ndarray) -> np.ndarray:
    """(N, 4) bounding boxes of the kept points, NaN without a face: where the face is, in any roll."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: frames without a face
        return np.concatenate([np.nanmin(points, axis=1), np.nanmax(points, axis=1)], axis=1)


def _segments(boxes: np.ndarray, turns: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Runs of consecutive face frames with no cut (and no change of ``turns``) between them,
    as (start, stop)."""
    segments: list[tuple[int, int]] = []
    start = None
    for i in range(len(boxes)):
        present = not np.isnan(boxes[i, 0])
        turned = turns is not None and i > 0 and turns[i] != turns[i - 1]
        if start is not None and (not present or turned or box_iou(boxes[i - 1], boxes[i]) < CUT_IOU):
            segments.append((start, i))
            start = None
        if present and start is None:
            start = i
    if start is not None:
        segments.append((start, len(boxes)))
    return segments


def _gaussian(values: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0. The ends are extended by point reflection,
    which continues a steady motion straight on, so the first and last frames are not pulled
    back towards the middle."""
    radius = min(int(np.ceil(3 * sigma)), len(values) - 1)
    if sigma <= 0 or radius < 1:
        return values
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(values, [(radius, radius)] + [(0, 0)] * (values.ndim - 1), mode="reflect", reflect_type="odd")
    return sum(w * padded[k:k + len(values)] for k, w in enumerate(taps))


def _smooth(points: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth one shot's (T, K, 2) landmarks: a Gaussian of ``sigma`` frames where the head is
    still, down to :data:`LIGHT_SIGMA` where it moves at :data:`FAST` or more within ``sigma``
    frames (the strong Gaussian would round off the start and the end of a motion). Both look
    ahead as far as behind, so a steady motion is followed without lag."""
    if sigma <= 1 or len(points) < 3:
        return points
    strong, light = _gaussian(points, sigma), _gaussian(points, min(sigma, LIGHT_SIGMA))
    width = np.maximum(np.ptp(strong[..., 0], axis=1), 1.0)
    speed = np.linalg.norm(np.gradient(strong.mean(axis=1), axis=0), axis=1) / width
    reach = int(np.ceil(sigma))
    moving = np.pad(np.clip(speed / FAST, 0.0, 1.0), reach, mode="edge")
    weight = np.lib.stride_tricks.sliding_window_view(moving, 2 * reach + 1).max(axis=1)
    return strong + weight[:, None, None] * (light - strong)


def _fades(present: np.ndarray, fade_frames: int) -> np.ndarray:
    """Blend weights: 1 inside a run of face frames, ramping over ``fade_frames`` next to frames
    without a face (not at the video's own start or end, where there is nothing to fade from)."""
    n = len(present)
    fade = np.zeros(n, np.float32)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
    for i, j in zip(edges[::2], edges[1::2], strict=True):
        k = np.arange(j - i, dtype=np.float32)
        ramp_in = (k + 1) / (fade_frames + 1) if i > 0 else np.ones_like(k)
        ramp_out = (j - i - k) / (fade_frames + 1) if j < n else np.ones_like(k)
        fade[i:j] = np.minimum(1.0, np.minimum(ramp_in, ramp_out))
    return fade
