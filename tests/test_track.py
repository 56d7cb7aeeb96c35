"""Face track: smoothing within shots, fades at face gaps, cache round-trip and invalidation."""

import numpy as np

from lipsyncd.engine.faces import track as T
from lipsyncd.engine.faces.track import KEPT, FaceTrack, analyse

from test_blend import synthetic_points


def locator_from(script):
    """A locate function replaying a per-frame script of (cx, cy) or None."""
    def locate(frames):
        out = []
        for frame in frames:
            item = script[int(frame[0, 0, 0])]
            out.append(None if item is None else synthetic_points(*item))
        return out
    return locate


def frames_for(n):
    for i in range(n):
        yield np.full((4, 4, 3), i, np.uint8)


def test_still_face_with_jitter_is_smoothed():
    rng = np.random.default_rng(0)
    script = [(100 + rng.normal(0, 2), 100 + rng.normal(0, 2)) for _ in range(40)]
    raw = analyse(frames_for(40), locator_from(script), smooth_frames=1, batch_size=7)
    smooth = analyse(frames_for(40), locator_from(script), smooth_frames=9, batch_size=7)
    assert len(smooth) == 40 and smooth.has_face.all()
    assert np.diff(smooth.boxes[:, 0]).std() < 0.5 * np.diff(raw.boxes[:, 0]).std()


def test_cut_restarts_smoothing_and_gap_fades():
    script = [(60, 60)] * 10 + [(300, 300)] * 10 + [None] * 5 + [(60, 60)] * 10
    tr = analyse(frames_for(35), locator_from(script), smooth_frames=5, fade_frames=4)
    # no averaging across the cut at frame 10: the box right after it sits on the new face
    assert abs((tr.boxes[10, 0] + tr.boxes[10, 2]) / 2 - 300) < 1
    assert abs((tr.boxes[9, 0] + tr.boxes[9, 2]) / 2 - 60) < 1
    assert not tr.has_face[20:25].any() and np.all(tr.fade[20:25] == 0)
    assert tr.fade[0] == 1.0                        # video start: nothing to fade from
    assert tr.fade[19] < 1.0 and tr.fade[25] < tr.fade[26] < 1.0 <= tr.fade[30]
    assert tr.fade[34] == 1.0                       # video end


def test_box_spans_brows_to_chin_and_cheek_to_cheek():
    tr = analyse(frames_for(1), locator_from([(100, 100)]), smooth_frames=1)
    x0, y0, x1, y1 = tr.boxes[0]
    assert abs(x0 - 60) < 1 and abs(x1 - 140) < 1 and abs(y1 - 140) < 1
    assert 70 < y0 < 82  # a little above the brows at y = 82


def test_cache_roundtrip_and_version_mismatch(tmp_path, monkeypatch):
    tr = analyse(frames_for(3), locator_from([(100, 100)] * 3), smooth_frames=1)
    tr = FaceTrack(tr.boxes, tr.points, tr.fade, np.array([0, 1, 3], np.int8))
    path = tmp_path / "t.npz"
    tr.save(path)
    back = FaceTrack.load(path)
    assert np.array_equal(back.has_face, tr.has_face)
    assert np.array_equal(back.turns, tr.turns)
    np.testing.assert_array_equal(back.points, tr.points)
    assert back.points.shape == (3, len(KEPT), 2)
    monkeypatch.setattr(T, "TRACK_VERSION", T.TRACK_VERSION + 1)
    assert FaceTrack.load(path) is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert FaceTrack.load(tmp_path / "bad.npz") is None


def test_a_face_seen_on_one_or_two_frames_between_faceless_ones_is_not_drawn():
    """A blip between faceless frames (a false detection, a flicker in a cartoon) would be a
    one-frame blend: only a run of three frames or more fades in."""
    script = [None] * 5 + [(100, 100)] + [None] * 4 + [(100, 100)] * 2 + [None] * 3 + [(100, 100)] * 8
    tr = analyse(frames_for(len(script)), locator_from(script), smooth_frames=1)
    assert list(np.flatnonzero(tr.has_face)) == list(range(15, 23))
    assert np.all(tr.fade[:15] == 0) and tr.fade[15] > 0


def test_a_still_photo_keeps_its_one_frame_face():
    tr = analyse(frames_for(1), locator_from([(100, 100)]), smooth_frames=7)
    assert tr.has_face.all() and tr.fade[0] == 1.0


def test_a_face_lying_sideways_is_stored_upright():
    """The kept points of a face in a frame turned a quarter (its brows run up the frame, roll
    −90°): the track turns them three quarters on, where the face is upright and its box spans
    brows to chin as usual."""
    upright = synthetic_points(100, 100)
    lying = np.stack([upright[:, 1], 200 - upright[:, 0]], axis=1)  # on np.rot90(frame, 1), 200 wide
    frames = [np.full((200, 200, 3), i, np.uint8) for i in range(6)]
    tr = analyse(frames, lambda chunk: [lying.copy() for _ in chunk], smooth_frames=1)
    assert (tr.turns == 3).all()
    np.testing.assert_allclose(tr.points[0], upright, atol=1e-4)
    expected = analyse(frames, lambda chunk: [upright.copy() for _ in chunk], smooth_frames=1)
    np.testing.assert_allclose(tr.boxes, expected.boxes, atol=1e-4)
