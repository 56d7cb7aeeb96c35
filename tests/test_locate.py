"""The locator's schedule: the detector every few frames while the mesh follows the face, and
at once wherever there is no face to follow or the mesh loses it."""

import numpy as np

from lipsyncd.engine.faces.detector import Detection
from lipsyncd.engine.faces.locate import FaceLocator
from lipsyncd.engine.faces.mesh import NUM_POINTS


class Scene:
    """Frames are numbered by their first pixel; ``faces[n]`` is the face box in frame n or None."""

    def __init__(self, faces):
        self.faces = faces
        self.detected: list[int] = []

    def frame(self, n):
        return np.full((100, 100, 3), n, np.uint8)

    def detect(self, frames):
        out = []
        for f in frames:
            n = int(f[0, 0, 0])
            self.detected.append(n)
            box = self.faces[n]
            out.append([] if box is None else [Detection(box, 0.9, np.zeros((6, 2)))])
        return out

    def landmarks(self, frames, boxes, angles=None):
        """Presence is high only when the box given overlaps the true face of that frame."""
        presence = []
        for f, b in zip(frames, boxes):
            true = self.faces[int(f[0, 0, 0])]
            presence.append(1.0 if true is not None and abs(true[0] - b[0]) < 20 else 0.1)
        points = np.zeros((len(frames), NUM_POINTS, 3), np.float32)
        points[:, :, 0] = np.asarray(boxes)[:, :1]
        return points, np.array(presence)


def run(scene, n, chunk=8):
    locate = FaceLocator(scene, scene)
    found = []
    for start in range(0, n, chunk):
        found += locate([scene.frame(i) for i in range(start, min(n, start + chunk))])
    return found


def test_steady_face_runs_the_detector_every_fourth_frame():
    scene = Scene([(30.0, 30.0, 70.0, 70.0)] * 16)
    found = run(scene, 16)
    assert all(f is not None for f in found)
    assert scene.detected == [0, 4, 8, 12]


def test_face_appearing_between_detections_is_found_on_its_first_frame():
    scene = Scene([None] * 5 + [(30.0, 30.0, 70.0, 70.0)] * 11)
    found = run(scene, 16)
    assert [f is not None for f in found] == [False] * 5 + [True] * 11
    assert 5 in scene.detected


def test_cut_that_moves_the_face_is_caught_by_the_mesh_and_redetected():
    scene = Scene([(10.0, 10.0, 40.0, 40.0)] * 6 + [(60.0, 60.0, 95.0, 95.0)] * 10)
    found = run(scene, 16)
    assert all(f is not None for f in found)
    assert found[6][0, 0] == 60.0 and found[5][0, 0] == 10.0  # frame 6: the new place at once
    assert 6 in scene.detected


class MissingScene(Scene):
    """The face is in every frame, but the detector misses it on the frames in ``misses``."""

    def __init__(self, faces, misses):
        super().__init__(faces)
        self.misses = set(misses)

    def detect(self, frames):
        found = super().detect(frames)
        return [[] if int(f[0, 0, 0]) in self.misses else faces for f, faces in zip(frames, found)]


def test_a_detector_miss_is_no_evidence_while_the_mesh_sees_the_face():
    """BlazeFace misses a clearly visible face now and then: on a scheduled detection (4, 8) and
    on frames around them. The mesh still sees it there from the last guide: every frame has it."""
    scene = MissingScene([(30.0, 30.0, 70.0, 70.0)] * 16, misses=[3, 4, 5, 8])
    found = run(scene, 16)
    assert all(f is not None for f in found)


def test_a_face_that_leaves_is_let_go():
    scene = Scene([(30.0, 30.0, 70.0, 70.0)] * 6 + [None] * 10)
    found = run(scene, 16)
    assert [f is not None for f in found] == [True] * 6 + [False] * 10
