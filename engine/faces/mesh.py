"""468 face landmarks per frame: MediaPipe's FaceMesh model, run batched (torch or OpenVINO, :mod:`.runtime`).

The model sees a 192×192 RGB crop scaled to [0, 1], a square around the face; it returns the
points in crop pixels (z in the same unit as x, negative towards the camera) and a logit that a
face is there at all. As MediaPipe's graph does, we crop a square centred on the given box, with
a side of :data:`CROP_SCALE` times the box's larger extent, turned by the face's roll so the face
is upright in the crop (the model only knows upright faces: a crop a quarter turn off says "no
face"), and map the points back to frame pixels (continuous coordinates, as in :mod:`.detector`).

The index sets below are MediaPipe's own (``face_mesh_connections.py``), ordered as closed
contours so they can be drawn or filled directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from .runtime import TORCH, FaceRuntime

INPUT_SIZE = 192
NUM_POINTS = 468
CROP_SCALE = 1.5
"""Crop side / the larger extent of the box. MediaPipe uses 1.5 for both a detector box and the
previous frame's landmark box; measured on the conformance images it gives the closest points
from a detector box (1.25 puts the lips up to 27% further off) and is as good for landmark boxes."""

LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
              375, 321, 405, 314, 17, 84, 181, 91, 146)
"""Outer lip contour: from the right mouth corner (61) over the upper lip to the left corner (291)
and back along the lower lip."""
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308,
              324, 318, 402, 317, 14, 87, 178, 88, 95)
"""Inner lip contour (the mouth opening), same direction: corners 78 and 308."""
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
"""Face outline from the top of the forehead (10) round the left cheek, chin and right cheek."""
CHIN = 152
"""The lowest point of the chin on :data:`FACE_OVAL`."""
RIGHT_EYE_CORNER, LEFT_EYE_CORNER = 33, 263
"""The eyes' outer corners, which MediaPipe's graph uses to turn its crop upright."""
JAW = FACE_OVAL[FACE_OVAL.index(454):FACE_OVAL.index(234) + 1]
"""The part of :data:`FACE_OVAL` below the ears (454 left, 234 right), through the chin."""

MODEL_NAME = "face_landmark"


def crop_geometry(boxes: np.ndarray, scale: float = CROP_SCALE,
                  angles: np.ndarray | None = None) -> np.ndarray:
    """(N, 2, 3) affine maps from continuous crop pixels (u, v, 0..192) to frame pixels of the
    square crops around (N, 4) x0, y0, x1, y1 boxes, each turned by ``angles`` (radians, the face's
    roll: the direction of its eye line in the frame, y down), so that the face is upright in the
    crop whatever its roll, as MediaPipe's graph crops it. ``frame = A[:, :2] @ (u, v) + A[:, 2]``."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    angles = np.zeros(len(boxes)) if angles is None else np.asarray(angles, dtype=np.float64).reshape(-1)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    step = scale * np.max(boxes[:, 2:] - boxes[:, :2], axis=1) / INPUT_SIZE
    cos, sin = np.cos(angles) * step, np.sin(angles) * step
    linear = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)
    offset = centre - linear @ np.array([INPUT_SIZE / 2, INPUT_SIZE / 2])
    return np.concatenate([linear, offset[:, :, None]], axis=2)


def crop(frame_bgr: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """The 192×192 RGB crop whose continuous point (u, v) is frame point ``transform @ (u, v, 1)``;
    outside the frame is black. Bilinear, as the conformance fixtures' crops are."""
    # warpAffine maps destination pixel indices to source pixel indices: centres are at +0.5.
    matrix = transform.copy()
    matrix[:, 2] += transform[:, :2] @ np.array([0.5, 0.5]) - 0.5
    patch = cv2.warpAffine(frame_bgr, matrix, (INPUT_SIZE, INPUT_SIZE),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return cv2.cvtColor(patch, cv2.COLOR_BGR2RGB)


def roll(points: np.ndarray) -> np.ndarray:
    """The roll (N,) in radians of (N, 468, 2+) meshes: the direction of the line from the right
    eye's outer corner to the left one's. 0 is upright; y points down, so π/2 is a face lying with
    the top of its head towards the frame's right."""
    xy = np.asarray(points)[..., :2]
    eye_line = xy[:, LEFT_EYE_CORNER] - xy[:, RIGHT_EYE_CORNER]
    return np.arctan2(eye_line[:, 1], eye_line[:, 0])


def points_box(points: np.ndarray) -> np.ndarray:
    """(N, 4) bounding boxes of (N, 468, 2+) points: the box to track the face into the next frame."""
    xy = np.asarray(points)[..., :2]
    return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)


class FaceMesh:
    """Batched face landmarks; keeps no reference to the frames it was given."""

    def __init__(self, device: str | torch.device = "cpu", max_batch: int = 64, runtime: FaceRuntime = TORCH) -> None:
        self.device = torch.device(device)
        self.max_batch = max_batch
        self._model = runtime.load(MODEL_NAME, self.device)

    @torch.inference_mode()
    def run_model(self, crops_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw model on (N, 192, 192, 3) RGB uint8 crops: points (N, 468, 3) in crop pixels and
        face-presence logits (N,)."""
        x = torch.from_numpy(crops_rgb).to(self.device).float() / 255.0
        points, logits = self._model(x)
        return (points.reshape(-1, NUM_POINTS, 3).cpu().numpy(), logits.reshape(-1).cpu().numpy())

    def landmarks(self, frames_bgr: Sequence[np.ndarray], boxes: np.ndarray, angles: np.ndarray | None = None,
                  scale: float = CROP_SCALE) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks of the face in ``boxes[i]`` (x0, y0, x1, y1) of BGR uint8 ``frames_bgr[i]``,
        whose roll is ``angles[i]`` (radians, see :func:`roll`; default upright).

        Returns points (N, 468, 3) float32 in frame pixels (z scaled like x) and face presence
        probabilities (N,). With the default ``scale`` a detector box and :func:`points_box` of the
        previous frame's points (as a tracker would pass) measure equally close to MediaPipe.
        """
        if len(frames_bgr) != len(boxes):
            raise ValueError(f"{len(frames_bgr)} frames but {len(boxes)} boxes")
        transforms = crop_geometry(boxes, scale, angles)
        points = np.empty((len(frames_bgr), NUM_POINTS, 3), dtype=np.float32)
        logits = np.empty(len(frames_bgr), dtype=np.float32)
        for start in range(0, len(frames_bgr), self.max_batch):
            part = slice(start, start + self.max_batch)
            pairs = zip(frames_bgr[part], transforms[part], strict=True)
            crops = np.stack([crop(frame, transform) for frame, transform in pairs])
            points[part], logits[part] = self.run_model(crops)
        linear, offset = transforms[:, :, :2], transforms[:, :, 2]
        points[..., :2] = np.einsum("nij,nkj->nki", linear, points[..., :2]) + offset[:, None, :]
        points[..., 2] *= np.sqrt(np.abs(np.linalg.det(linear)))[:, None]
        # The sigmoid without overflow warnings, in float64: a face at the right roll and one a
        # half turn off may both round to 1.0 in float32, and the locator compares them.
        return points, 0.5 + 0.5 * np.tanh(logits.astype(np.float64) / 2)
