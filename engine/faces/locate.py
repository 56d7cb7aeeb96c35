"""Finding the one face to re-animate in each frame: detector → choice → mesh, following the mesh.

The detector runs on every few frames and wherever there is no face to follow, so faces that
appear, leave or change with a cut are found again at once; the mesh gives the lips and jaw
precisely in every frame and its own presence score says whether the face is still there. A
detector that finds nothing on a frame where the mesh still sees the face is *no new evidence*,
not "no face": BlazeFace misses clearly visible faces now and then (glasses, motion blur), so the
mesh keeps following from where it last saw the face, and only the mesh losing it ends the
following.

Faces at any roll: where the detector finds no face upright that the mesh confirms, it looks at
the frame turned by a quarter, three quarters and a half, so a face lying sideways (a phone clip
that plays sideways) is found; while one is followed, the detector looks at the frame turned so
that face is upright, and the mesh's crop is turned by its roll.

When several faces are present, the one chosen in the previous frame is kept while it is still
there (no flicking between two speakers), otherwise the largest or the most central one is
taken, as the job asks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple, Protocol, TypeVar

import numpy as np
import torch

from .detector import Box, Detection, FaceDetector, box_of
from .mesh import FaceMesh, roll
from .track import KEPT, MIN_PRESENCE, box_iou
from .turns import upright_turns

KEEP_IOU = 0.3
"""A detection overlapping the previous frame's choice this much is taken to be the same face."""
SETTLED = 0.01
"""A mesh answer whose box moved less than this fraction of its size when re-cropped around it
has settled (see :meth:`FaceLocator._refine`)."""
MAX_REFINE = 4
"""Most runs of the mesh on one frame while it settles (one or two on a detector's usual box)."""


class Guide(NamedTuple):
    """Where the mesh looks for the face in a frame: a box (x0, y0, x1, y1) and the face's roll."""

    box: Box
    roll: float


class Detects(Protocol):
    def detect(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]: ...


class Landmarks(Protocol):
    def landmarks(self, frames_bgr: Sequence[np.ndarray], boxes: np.ndarray,
                  angles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


class FaceLocator:
    """Callable (frames BGR) → for each frame, the chosen face's kept landmarks or None.

    Stateful across calls (it remembers the face it follows), so use one instance per video:
    :meth:`for_video`.
    """

    detect_every = 4
    """Frames between detector runs while a face is followed (the mesh runs on every frame and
    says when it lost the face, which brings the detector back at once)."""
    misses_keep_face = True
    """A detector miss while the mesh still sees the face keeps following it. Only a mesh whose
    presence score means something can say that; without one, a miss ends the following."""
    refine = True
    """Where the mesh answered from a detection's box, run it a second time cropped around its own
    first answer, and guide the frames after it by that. The mesh's answer moves with where its
    crop sits: from a detector box, whose shape is not the mesh's, up to 5 px on a 140 px face;
    cropped around a mesh's answer, within a pixel. So the track no longer jumps each time a new
    detection places the crops."""
    search_turns: tuple[int, ...] = (1, 3, 2)
    """Quarter turns (``np.rot90``) the detector also tries on its every-few-frames runs where
    nothing it found upright was confirmed by the mesh."""

    def __init__(self, detector: Detects, mesh: Landmarks, choice: str = "largest") -> None:
        self.detector = detector
        self.mesh = mesh
        self.choice = choice
        self._carried: Guide | None = None
        self._count = 0

    @classmethod
    def load(cls, device: torch.device, choice: str = "largest") -> FaceLocator:
        return cls(FaceDetector(device), FaceMesh(device), choice)

    def for_video(self, choice: str) -> FaceLocator:
        """A locator on the same models with no memory of another video."""
        return type(self)(self.detector, self.mesh, choice)

    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Each frame's chosen face, resolved by rounds until nothing new can be tried.

        A round plans every frame's guide from the evidence so far (detections; the mesh's own,
        refined answer where it confirmed one; the mesh box of a frame before one where the guide
        failed), runs the mesh on every frame with a guide not yet tried there, and runs the
        detector on frames left without a face. The mesh runs in batches however the evidence
        falls; a frame is faceless only when neither a detection nor the mesh of the frame before
        it gives a guide under which the mesh sees a face.
        """
        n = len(frames)
        found: dict[int, list[Detection]] = {}
        anchors: dict[int, Guide] = {}
        tried: dict[int, set[Guide]] = defaultdict(set)
        points: list[np.ndarray | None] = [None] * n
        due = [i for i in range(n) if (self._count + i) % self.detect_every == 0]
        self._detect(frames, found, due, self._carried)
        turned: set[int] = set()
        rolls: dict[int, float] = {}
        while True:
            guides, picked, origins, fresh = self._guides(frames, found, anchors, rolls)
            untried = [i for i in range(n) if points[i] is None and guides[i] is not None and guides[i] not in tried[i]]
            unoriented = [i for i in untried if i in fresh and i not in rolls and self.search_turns]
            if unoriented:
                rolls.update(self._orient(frames, unoriented, guides))
                continue
            # A frame guided by an earlier frame's detection waits until the mesh has answered
            # there: it is then guided by that answer, a box shaped as the mesh's own.
            waiting = set(untried) & set(picked)
            todo = [i for i in untried if origins[i] == i or origins[i] not in waiting]
            if todo:
                self._follow(frames, todo, guides, tried, points)
                confirmed = [i for i in todo if points[i] is not None and i in picked]
                if self.refine:
                    self._refine(frames, points, confirmed)
                for i in confirmed:
                    anchors[i] = _guide_of(_known(points[i]))
                for i in todo:
                    if points[i] is not None:
                        continue
                    if i in picked:  # a detection the mesh does not confirm is no evidence
                        found[i] = [face for face in found[i] if face is not picked[i]]
                    if i > 0 and (before := points[i - 1]) is not None:
                        anchors[i - 1] = _guide_of(before)
                continue
            search = [i for i in range(n) if points[i] is None and i not in found]
            for guide in {guides[i] for i in search}:
                self._detect(frames, found, [i for i in search if guides[i] == guide], guide)
            if search:
                continue
            sideways = [i for i in due if points[i] is None and i not in turned]
            if not sideways:
                break
            self._detect_turned(frames, found, sideways)
            turned.update(sideways)
        self._count += n
        self._carried = _guide_of(points[-1]) if n and points[-1] is not None else None
        return [None if p is None else p[KEPT, :2].astype(np.float32) for p in points]

    def _follow(self, frames: Sequence[np.ndarray], todo: list[int], guides: list[Guide | None],
                tried: dict[int, set[Guide]], points: list[np.ndarray | None]) -> None:
        """Run the mesh on frames ``todo`` from their guides; keep the points where it sees a face."""
        plan = [_known(guides[i]) for i in todo]
        mesh, presence = self.mesh.landmarks([frames[i] for i in todo], np.array([g.box for g in plan]),
                                             np.array([g.roll for g in plan]))
        for k, i in enumerate(todo):
            tried[i].add(plan[k])
            if presence[k] >= MIN_PRESENCE:
                points[i] = mesh[k]

    def _refine(self, frames: Sequence[np.ndarray], points: list[np.ndarray | None], indices: list[int]) -> None:
        """Re-run the mesh on faces ``indices`` from their own answers (see :attr:`refine`), in
        place, again where the answer still moved by more than :data:`SETTLED` of the face's size
        (a poor detection box, such as one the detector fires on a face lying sideways, takes a
        few runs), at most :data:`MAX_REFINE` times."""
        for _ in range(MAX_REFINE):
            if not indices:
                return
            guides = [_guide_of(_known(points[i])) for i in indices]
            mesh, presence = self.mesh.landmarks([frames[i] for i in indices], np.array([g.box for g in guides]),
                                                 np.array([g.roll for g in guides]))
            moving = []
            for k, i in enumerate(indices):
                if presence[k] >= MIN_PRESENCE:
                    if _moved(guides[k], _guide_of(mesh[k])) > SETTLED:
                        moving.append(i)
                    points[i] = mesh[k]
            indices = moving

    def _detect(self, frames: Sequence[np.ndarray], found: dict[int, list[Detection]], indices: list[int],
                guide: Guide | None) -> None:
        """The detector on frames ``indices``, turned so that the face ``guide`` follows (if any)
        is upright: on a face lying sideways, the upright detector finds nothing or fires with
        keypoints that mean nothing."""
        if indices:
            turns = int(upright_turns(guide.roll)) if guide else 0
            found.update(zip(indices, self._turned_detect([frames[i] for i in indices], turns), strict=True))

    def _detect_turned(self, frames: Sequence[np.ndarray], found: dict[int, list[Detection]],
                       indices: list[int]) -> None:
        """Look for faces at other quarter turns on frames ``indices``, where nothing the detector
        found upright was confirmed by the mesh: the detector on each frame turned by each of
        :attr:`search_turns`; all faces found are candidates, best score first. The score cannot
        tell the turn (the detector finds an upright face upside down almost as surely, and fires
        on a sideways face upright): the mesh can, and rejects the wrong ones."""
        for turns in self.search_turns:
            for i, faces in zip(indices, self._turned_detect([frames[i] for i in indices], turns), strict=True):
                found[i] = sorted(found[i] + faces, key=lambda face: -face.score)

    def _turned_detect(self, frames: Sequence[np.ndarray], turns: int) -> list[list[Detection]]:
        """The detector on ``np.rot90(frame, turns)`` of each frame, detections in frame pixels."""
        if turns == 0:
            return self.detector.detect(frames)
        found = self.detector.detect([np.ascontiguousarray(np.rot90(frame, turns)) for frame in frames])
        return [[face.unturned(turns, frame.shape[1], frame.shape[0]) for face in faces]
                for frame, faces in zip(frames, found, strict=True)]

    def _guides(self, frames: Sequence[np.ndarray], found: dict[int, list[Detection]], anchors: dict[int, Guide],
                rolls: dict[int, float]) -> tuple[list[Guide | None], dict[int, Detection], list[int | None], set[int]]:
        """The guide of each frame: the newest evidence at or before it. A chosen detection on the
        frame itself, else the mesh of the frame before (where it was anchored), else whatever
        guided the frame before (a detector miss changes nothing). None: no face to follow.

        Also returns the detection chosen on each frame where one was; for each frame, the frame
        whose detection its guide is (None for a mesh's); and the frames whose detection is of a
        face not followed so far, whose guide's roll is ``rolls``'s once :meth:`_orient` checked it.
        """
        guides: list[Guide | None] = []
        origins: list[int | None] = []
        picked: dict[int, Detection] = {}
        fresh: set[int] = set()
        last, origin = self._carried, None
        for i, frame in enumerate(frames):
            if i - 1 in anchors:
                last, origin = anchors[i - 1], None
            if found.get(i):
                pick = picked[i] = self._choose(found[i], last, frame.shape[1], frame.shape[0])
                if last is not None and box_iou(pick.box, last.box) >= KEEP_IOU:
                    last = self._guide_from(pick, last)
                else:
                    fresh.add(i)
                    last = Guide(pick.box, rolls.get(i, pick.roll))
                origin = i
            elif i in found and not self.misses_keep_face:
                last, origin = None, None
            guides.append(last)
            origins.append(origin)
        return guides, picked, origins, fresh

    def _orient(self, frames: Sequence[np.ndarray], indices: list[int], guides: list[Guide | None]) -> dict[int, float]:
        """For frames ``indices``, guided by the detection of a new face: the roll at which the
        mesh is surest that face is there, among the detection's and a quarter, a half and three
        quarters from it. The detector's keypoints cannot be trusted for it: it fires on faces
        lying sideways or upside down as if they were upright. The mesh's presence tells, though
        not by a threshold (a face upside down in its crop may still score 0.9999)."""
        offsets = np.array([0.0, np.pi / 2, np.pi, -np.pi / 2])
        known = {i: _known(guides[i]) for i in indices}
        plan = [(i, known[i].box, known[i].roll + offset) for i in indices for offset in offsets]
        _, presence = self.mesh.landmarks([frames[i] for i, _, _ in plan], np.array([box for _, box, _ in plan]),
                                          np.array([angle for _, _, angle in plan]))
        best = presence.reshape(len(indices), len(offsets)).argmax(axis=1)
        return {i: float(_wrap(known[i].roll + offsets[k])) for i, k in zip(indices, best, strict=True)}

    @staticmethod
    def _guide_from(pick: Detection, last: Guide | None) -> Guide:
        """The guide a detection gives. Its box always; its roll unless it contradicts the roll of
        the face followed by more than 45°: the upright detector sometimes fires on a face lying
        sideways, with keypoints that mean nothing, and the mesh knows the roll better."""
        if last is not None and abs(_wrap(pick.roll - last.roll)) > np.pi / 4:
            return Guide(pick.box, last.roll)
        return Guide(pick.box, pick.roll)

    def _choose(self, found: list[Detection], last: Guide | None, width: int, height: int) -> Detection:
        if last is not None:
            same = max(found, key=lambda d: box_iou(d.box, last.box))
            if box_iou(same.box, last.box) >= KEEP_IOU:
                return same
        if self.choice == "center":
            cx, cy = width / 2, height / 2
            return min(found,
                       key=lambda d: ((d.box[0] + d.box[2]) / 2 - cx) ** 2 + ((d.box[1] + d.box[3]) / 2 - cy) ** 2)
        return max(found, key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))


def _moved(before: Guide, after: Guide) -> float:
    """How far a box moved, corner by corner, as a fraction of its larger side."""
    size = max(before.box[2] - before.box[0], before.box[3] - before.box[1], 1.0)
    return float(np.abs(np.subtract(after.box, before.box)).max() / size)


def _wrap(angle: float) -> float:
    """An angle difference brought into [-π, π)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _guide_of(points: np.ndarray) -> Guide:
    """The guide a mesh gives the next frame: its bounding box and its roll (upright where the
    landmarks lack the eye corners: FAN fills only the kept rows)."""
    xy = points[:, :2]
    box = np.concatenate([np.nanmin(xy, axis=0), np.nanmax(xy, axis=0)])
    angle = float(roll(points[None])[0])
    return Guide(box_of(box), angle if np.isfinite(angle) else 0.0)


_T = TypeVar("_T")


def _known(value: _T | None) -> _T:
    """``value``, which the locator's bookkeeping guarantees is there (a guide for every frame it
    runs the mesh on, landmarks for every frame it confirmed); says so to the type checker, and
    fails at once, not later, if that ever stops being true."""
    if value is None:
        raise RuntimeError("face locator: a frame's guide or landmarks are missing")
    return value
