"""Finding the one face to re-animate in each frame: detector → choice → mesh.

The detector runs on every few frames and wherever the face is lost, so faces that appear,
leave or change with a cut are found again at once; the mesh gives the lips and jaw precisely
in every frame. When several faces are present,
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
Box = tuple[float, float, float, float]


class Detects(Protocol):
    def detect(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]: ...


class Landmarks(Protocol):
    def landmarks(self, frames_bgr: Sequence[np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class FaceLocator:
    """Callable (frames BGR) → for each frame, the chosen face's kept landmarks or None.

    Stateful across calls (it remembers the last choice), so use one instance per video:
    :meth:`for_video`.
    """

    detect_every = 4
    """Frames between detector runs while a face is followed (the mesh runs on every frame and
    says when it lost the face, which brings the detector back at once)."""

    def __init__(self, detector: Detects, mesh: Landmarks, choice: str = "largest") -> None:
        self.detector = detector
        self.mesh = mesh
        self.choice = choice
        self._last: Box | None = None
        self._count = 0

    @classmethod
    def load(cls, device: torch.device, choice: str = "largest") -> "FaceLocator":
        return cls(FaceDetector(device), FaceMesh(device), choice)

    def for_video(self, choice: str) -> "FaceLocator":
        """A locator on the same models with no memory of another video."""
        return type(self)(self.detector, self.mesh, choice)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        found: dict[int, list[Detection]] = {}

        def detect(indices: list[int]) -> None:
            if indices:
                found.update(zip(indices, self.detector.detect([frames[i] for i in indices])))

        # The detector runs on every ``detect_every``-th frame, and on any frame that has no face to
        # follow yet or whose mesh lost the face: a face that appears, moves fast or changes with
        # a cut is found on that very frame; in between, the last detection's box guides the mesh.
        detect([i for i in range(len(frames)) if (self._count + i) % self.detect_every == 0])
        boxes = self._assign(frames, found)
        detect([i for i, box in enumerate(boxes) if box is None and i not in found])
        boxes = self._assign(frames, found)
        result: list[np.ndarray | None] = [None] * len(frames)
        todo = [i for i, box in enumerate(boxes) if box is not None]
        while todo:
            points, presence = self.mesh.landmarks([frames[i] for i in todo], np.array([boxes[i] for i in todo]))
            for k, i in enumerate(todo):
                if presence[k] >= MIN_PRESENCE:
                    result[i] = points[k, KEPT, :2].astype(np.float32)
            lost = [i for i in todo if result[i] is None and i not in found]
            detect(lost)
            boxes = self._assign(frames, found)
            todo = [i for i in lost if boxes[i] is not None]
        self._count += len(frames)
        self._last = boxes[-1] if boxes else self._last
        return result

    def _assign(self, frames: Sequence[np.ndarray], found: dict[int, list[Detection]]) -> list[Box | None]:
        """The box the mesh starts from in each frame: the chosen detection where the detector
        ran, else the last one chosen before it (starting from the previous chunk's last)."""
        boxes: list[Box | None] = []
        last = self._last
        for i, frame in enumerate(frames):
            if i in found:
                pick = self._choose(found[i], last, frame.shape[1], frame.shape[0])
                last = pick.box if pick else None
            boxes.append(last)
        return boxes

    def _choose(self, found: list[Detection], last: Box | None, width: int, height: int) -> Detection | None:
        if not found:
            return None
        if last is not None:
            same = max(found, key=lambda d: box_iou(d.box, last))
            if box_iou(same.box, last) >= KEEP_IOU:
                return same
        if self.choice == "center":
            cx, cy = width / 2, height / 2
            return min(found, key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
        return max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))

