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
    tr = analyse(frames_for(3), locator_from([(100, 100), None, (100, 100)]), smooth_frames=1)
    path = tmp_path / "t.npz"
    tr.save(path)
    back = FaceTrack.load(path)
    assert np.array_equal(back.has_face, tr.has_face)
    np.testing.assert_array_equal(back.points, tr.points)
    assert back.points.shape == (3, len(KEPT), 2)
    monkeypatch.setattr(T, "TRACK_VERSION", T.TRACK_VERSION + 1)
    assert FaceTrack.load(path) is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert FaceTrack.load(tmp_path / "bad.npz") is None
