"""Finding the one face to re-animate in each frame: detector → choice → mesh.

The detector runs on every frame, so faces that appear, leave or change with a cut are found
again at once; the mesh then gives the lips and jaw precisely. When several faces are present,
the one chosen in the previous frame is kept while it is still there (no flicking between two
speakers), otherwise the largest or the most central one is taken, as the job asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from .detector import Detection, FaceDetector
from .mesh import FaceMesh
from .track import KEPT, MIN_PRESENCE, box_iou

KEEP_IOU = 0.3
"""A detection overlapping the previous frame's choice this much is taken to be the same face."""


class Detects(Protocol):
    def detect(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]: ...


class Landmarks(Protocol):
    def landmarks(self, frames_bgr: Sequence[np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class FaceLocator:
    """Callable (frames BGR) → for each frame, the chosen face's kept landmarks or None.

    Stateful across calls (it remembers the last choice), so use one instance per video.
    """

    def __init__(self, detector: Detects, mesh: Landmarks, choice: str = "largest") -> None:
        self.detector = detector
        self.mesh = mesh
        self.choice = choice
        self._last: tuple[float, float, float, float] | None = None

    @classmethod
    def load(cls, device: torch.device, choice: str = "largest") -> "FaceLocator":
        return cls(FaceDetector(device), FaceMesh(device), choice)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        detections = self.detector.detect(frames)
        chosen: list[Detection | None] = []
        for frame, found in zip(frames, detections):
            pick = self._choose(found, frame.shape[1], frame.shape[0])
            self._last = pick.box if pick else None
            chosen.append(pick)
        with_face = [i for i, d in enumerate(chosen) if d is not None]
        result: list[np.ndarray | None] = [None] * len(frames)
        if not with_face:
            return result
        boxes = np.array([chosen[i].box for i in with_face], np.float32)
        points, presence = self.mesh.landmarks([frames[i] for i in with_face], boxes)
        for k, i in enumerate(with_face):
            if presence[k] >= MIN_PRESENCE:
                result[i] = points[k, KEPT, :2].astype(np.float32)
        return result

    def _choose(self, found: list[Detection], width: int, height: int) -> Detection | None:
        if not found:
            return None
        if self._last is not None:
            same = max(found, key=lambda d: box_iou(d.box, self._last))
            if box_iou(same.box, self._last) >= KEEP_IOU:
                return same
        if self.choice == "center":
            cx, cy = width / 2, height / 2
            return min(found, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
        return max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))

