"""Find faces in frames: MediaPipe's BlazeFace full-range detector, run batched (torch or OpenVINO, :mod:`.runtime`).

The pre- and post-processing follow MediaPipe's face detection graph, because the model was trained
for it: the frame is letterboxed into a 192×192 RGB square scaled to [-1, 1]; each of the 48×48
anchors regresses a box and six keypoints relative to its own centre; anchors scoring above the
threshold are merged by score-weighted non-maximum suppression; the letterbox is undone.

Coordinates are continuous frame pixels: pixel (i, j) covers [j, j+1) × [i, i+1), so a point at
the centre of the top-left pixel is (0.5, 0.5). Boxes are not clipped to the frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .runtime import TORCH, FaceRuntime
from .turns import unturn_points

INPUT_SIZE = 192
GRID = 48
MIN_SUPPRESSION_IOU = 0.3
"""MediaPipe's face detection graph merges detections overlapping by more than this IoU."""
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")
"""The six keypoints, in order; "right" is the person's right, on the left of an unmirrored image."""

MODEL_NAME = "face_detection_full_range"

Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 in frame pixels."""


def box_of(values: Iterable[float]) -> Box:
    """Four numbers (numpy's or not) as a :data:`Box` of Python floats."""
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


@dataclass(frozen=True, eq=False)
class Detection:
    """One face. ``eq=False``: two detections are equal only if they are the same object (arrays
    make field-wise equality ambiguous)."""

    box: Box
    score: float
    """Sigmoid of the best anchor's logit, 0..1."""
    keypoints: np.ndarray
    """(6, 2) x, y in frame pixels, in :data:`KEYPOINT_NAMES` order; read-only."""

    @property
    def roll(self) -> float:
        """The face's roll in radians from its eye keypoints, as :func:`.mesh.roll` measures it
        (0 for a detector that gives no keypoints)."""
        if len(self.keypoints) < 2:
            return 0.0
        dx, dy = self.keypoints[1] - self.keypoints[0]
        return float(np.arctan2(dy, dx))

    def unturned(self, turns: int, width: int, height: int) -> Detection:
        """This detection, found on ``np.rot90(frame, turns)`` of a ``width`` × ``height`` frame,
        in the frame's own pixels."""
        x0, y0, x1, y1 = self.box
        corners = unturn_points(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]), turns, width, height)
        keypoints = unturn_points(self.keypoints, turns, width, height)
        keypoints.setflags(write=False)
        return Detection(box_of(np.concatenate([corners.min(axis=0), corners.max(axis=0)])), self.score, keypoints)


@dataclass(frozen=True)
class Letterbox:
    """Where a frame sits in the square model input: ``input = frame * scale + offset`` (pixels)."""

    scale: float
    offset: tuple[float, float]

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 2) model-input pixel coordinates back to frame pixels."""
        return (points - np.asarray(self.offset)) / self.scale


def letterbox(frame_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """Pad a BGR frame to a centred square with black, shrink it to 192×192 RGB.

    Padding before resizing (rather than after) with area interpolation is the exact recipe of the
    conformance fixtures, so the model sees the pixels its golden numbers were computed on.
    """
    height, width = frame_bgr.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    scale = INPUT_SIZE / side
    if side > INPUT_SIZE and all(n * INPUT_SIZE % side == 0 for n in (height, width, top, left)):
        # The frame's edges fall on input pixel edges (true of 1080p, 720p, 4K, 4:3...): shrinking
        # the frame alone gives the same pixels, without building and shrinking the padded square.
        y, x, h, w = (n * INPUT_SIZE // side for n in (top, left, height, width))
        small: np.ndarray = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
        small[y:y + h, x:x + w] = cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_AREA)
    else:
        square = cv2.copyMakeBorder(frame_bgr, top, side - height - top, left, side - width - left,
                                    cv2.BORDER_CONSTANT, value=(0, 0, 0))
        interpolation = cv2.INTER_AREA if side > INPUT_SIZE else cv2.INTER_LINEAR
        small = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB), Letterbox(scale, (left * scale, top * scale))


def _anchors() -> np.ndarray:
    """(2304, 2) anchor centres in model-input pixels, row by row as the model's outputs are."""
    centres = (np.arange(GRID, dtype=np.float32) + 0.5) * (INPUT_SIZE / GRID)
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


class FaceDetector:
    """Batched face detection; keeps no reference to the frames it was given."""

    def __init__(self, device: str | torch.device = "cpu", min_score: float = 0.5,
                 max_batch: int = 64, runtime: FaceRuntime = TORCH) -> None:
        self.device = torch.device(device)
        self.min_score = min_score
        self.max_batch = max_batch
        self._model = runtime.load(MODEL_NAME, self.device)
        self._anchors = torch.from_numpy(_anchors()).to(self.device)

    def run_model(self, inputs_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model on (N, 192, 192, 3) RGB uint8 letterboxed inputs: regressors (N, 2304, 16)
        in model-input pixels relative to each anchor, and score logits (N, 2304)."""
        regressors, logits = self._forward(inputs_rgb)
        return regressors.cpu().numpy(), logits.cpu().numpy()

    @torch.inference_mode()
    def _forward(self, inputs_rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(inputs_rgb).to(self.device).float() / 127.5 - 1.0
        regressors, logits = self._model(x)
        return regressors, logits[..., 0]

    def detect(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Faces in each BGR uint8 frame (any size), best score first."""
        results: list[list[Detection]] = []
        for start in range(0, len(frames_bgr), self.max_batch):
            placed = [letterbox(frame) for frame in frames_bgr[start:start + self.max_batch]]
            inputs = np.stack([rgb for rgb, _ in placed])
            for (points, scores), (_, placement) in zip(self._candidates(inputs), placed, strict=True):
                results.append(_merge(points, scores, placement))
        return results

    @torch.inference_mode()
    def _candidates(self, inputs_rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per input, the decoded anchors above ``min_score``: (K, 8, 2) points (box corners x0y0,
        x1y1, then 6 keypoints, model-input pixels) and (K,) scores. Thresholding on the device
        keeps the transfer to the few anchors that matter."""
        regressors, logits = self._forward(inputs_rgb)
        scores = torch.sigmoid(logits)
        image, anchor = torch.nonzero(scores > self.min_score, as_tuple=True)
        reg = regressors[image, anchor].reshape(-1, 8, 2)
        centre = self._anchors[anchor]
        half = reg[:, 1] / 2
        corners = torch.stack([reg[:, 0] + centre - half, reg[:, 0] + centre + half], dim=1)
        points = torch.cat([corners, reg[:, 2:] + centre[:, None]], dim=1).cpu().numpy()
        kept = scores[image, anchor].cpu().numpy()
        owner = image.cpu().numpy()
        return [(points[owner == i], kept[owner == i]) for i in range(len(inputs_rgb))]


def _merge(points: np.ndarray, scores: np.ndarray, placement: Letterbox) -> list[Detection]:
    """MediaPipe's weighted non-maximum suppression: the best remaining anchor and every anchor
    overlapping it by more than :data:`MIN_SUPPRESSION_IOU` become one detection whose box and
    keypoints are their score-weighted mean and whose score is the best one's."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    detections = []
    remaining = np.arange(len(scores))
    while remaining.size:
        overlap = _iou(points[remaining[0], :2], points[remaining, :2]) > MIN_SUPPRESSION_IOU
        overlap[0] = True
        cluster, remaining = remaining[overlap], remaining[~overlap]
        weights = scores[cluster] / scores[cluster].sum()
        merged = placement.to_frame(np.tensordot(weights, points[cluster], axes=1))
        keypoints = merged[2:]
        keypoints.setflags(write=False)
        detections.append(Detection(box=box_of(merged[:2].ravel()),
                                    score=float(scores[cluster[0]]), keypoints=keypoints))
    return detections


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (2, 2) corner box against (K, 2, 2) corner boxes."""
    low = np.maximum(box[0], boxes[:, 0])
    high = np.minimum(box[1], boxes[:, 1])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    union = _area(box) + _area(boxes) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.prod(np.clip(boxes[..., 1, :] - boxes[..., 0, :], 0, None), axis=-1)
