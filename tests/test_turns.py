"""Quarter turns: points map between a frame and ``np.rot90`` of it, detections back to the frame."""

import numpy as np
import pytest
from lipsyncd.engine.faces.detector import Detection
from lipsyncd.engine.faces.turns import turn_points, unturn_points, upright_turns

WIDTH, HEIGHT = 7, 4


def marked_pixel_centre(image: np.ndarray) -> np.ndarray:
    y, x = np.argwhere(image)[0]
    return np.array([x + 0.5, y + 0.5])


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_points_follow_the_pixels_of_a_turned_frame(turns: int) -> None:
    frame = np.zeros((HEIGHT, WIDTH), np.uint8)
    frame[1, 5] = 1
    turned = np.rot90(frame, turns)
    here = np.array([5.5, 1.5])
    np.testing.assert_allclose(turn_points(here, turns, WIDTH, HEIGHT), marked_pixel_centre(turned))
    np.testing.assert_allclose(unturn_points(marked_pixel_centre(turned), turns, WIDTH, HEIGHT), here)


def test_upright_turns_undo_the_roll() -> None:
    """A face whose eye line points down the frame (roll +90°) is upright one quarter turn on."""
    assert list(upright_turns(np.radians([0, 30, 90, -90, 180, -170]))) == [0, 0, 1, 3, 2, 2]
    eyes = np.array([[3.0, 1.0], [3.0, 3.0]])  # right eye above the left one
    line = np.diff(turn_points(eyes, 1, WIDTH, HEIGHT), axis=0)[0]
    assert line[0] > 0 and line[1] == 0


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_a_detection_on_a_turned_frame_maps_back(turns: int) -> None:
    keypoints = np.array([[2.0, 1.0], [4.0, 1.0], [3.0, 2.0], [3.0, 3.0], [1.0, 1.5], [5.0, 1.5]])
    box = (1.0, 0.5, 5.0, 3.5)
    corners = np.array([[box[0], box[1]], [box[2], box[3]]])
    turned_corners = turn_points(corners, turns, WIDTH, HEIGHT)
    seen = Detection(tuple(np.concatenate([turned_corners.min(0), turned_corners.max(0)])), 0.9,
                     turn_points(keypoints, turns, WIDTH, HEIGHT))
    back = seen.unturned(turns, WIDTH, HEIGHT)
    np.testing.assert_allclose(back.box, box)
    np.testing.assert_allclose(back.keypoints, keypoints)
    assert back.roll == pytest.approx(0.0) and back.score == 0.9
    assert not back.keypoints.flags.writeable


def test_a_renderer_can_work_on_the_turned_view_of_a_frame() -> None:
    """The contract :class:`FaceTrack` documents: crop from and paste into the turned view of a
    frame (``I420.turned``: ``np.rot90`` of each plane, views), and the frame itself changes where
    the upright face is."""
    from lipsyncd.engine.blend import model_crop
    from lipsyncd.engine.yuv import I420, YuvMatrix

    matrix = YuvMatrix.of(1, 1)
    frame = I420(np.random.default_rng(0).integers(16, 235, (150, 80), np.uint8))  # 80×100
    view = frame.turned(1)
    assert (view.width, view.height) == (100, 80)
    upright = I420.from_planes(*(np.ascontiguousarray(p) for p in (view.y, view.u, view.v)))
    np.testing.assert_array_equal(model_crop(view, (10, 20, 60, 50), matrix),
                                  model_crop(upright, (10, 20, 60, 50), matrix))
    view.y[20:50, 10:60] = 0  # a paste into the view ...
    view.u[10:25, 5:30] = 0
    corners = unturn_points(np.array([[10.0, 20.0], [60.0, 50.0]]), 1, 80, 100)
    x0, y0 = corners.min(axis=0).astype(int)
    x1, y1 = corners.max(axis=0).astype(int)
    assert (frame.y[y0:y1, x0:x1] == 0).all() and frame.y.sum() > 0  # ... lands on the frame there
    assert (frame.u[y0 // 2:y1 // 2, x0 // 2:x1 // 2] == 0).all()  # chroma on the same place
