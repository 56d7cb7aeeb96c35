"""The face-alignment backend, offline and without the package: a fake ``face_alignment`` module
answers with a synthetic 68-point face, so the mapping onto the kept layout, the face choice and
the colour order handed to the library are all checked without weights or network."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import pytest

from lipsyncd.engine.blend import crop_rect, lower_face_mask
from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.faces import fan
from lipsyncd.engine.faces.mesh import FACE_OVAL
from lipsyncd.engine.faces.track import BROWS, KEPT, LIPS, NOSE, OVAL, _boxes_from_points

W, H = 320, 240


def synthetic_face(cx: float, cy: float, a: float) -> np.ndarray:
    """68 iBUG points of a frontal face: ears at (cx ± a, cy), chin at (cx, cy + 1.2a)."""
    b = 1.2 * a
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([cx - a * np.cos(t), cy + b * np.sin(t)], 1)
    brow_x = np.r_[np.linspace(-0.8, -0.15, 5), np.linspace(0.15, 0.8, 5)] * a + cx
    brows = np.stack([brow_x, np.full(10, cy - 0.3 * b)], 1)
    bridge = np.stack([np.full(4, cx), np.linspace(cy - 0.1 * b, cy + 0.35 * b, 4)], 1)
    nostrils = np.stack([np.linspace(-0.2, 0.2, 5) * a + cx, np.full(5, cy + 0.45 * b)], 1)
    ring = np.linspace(0, 2 * np.pi, 7)[:-1]
    eyes = np.concatenate([np.stack([x + 0.15 * a * np.cos(ring), cy - 0.1 * b + 0.05 * a * np.sin(ring)], 1)
                           for x in (cx - 0.45 * a, cx + 0.45 * a)])
    mx, my = cx, cy + 0.65 * b

    def lip(w: float, h: float, n_upper: int, n_lower: int) -> np.ndarray:
        ts = np.r_[np.linspace(np.pi, 0, n_upper), np.linspace(0, -np.pi, n_lower)[1:-1]]
        return np.stack([mx + w * np.cos(ts), my - h * np.sin(ts)], 1)

    points = np.concatenate([jaw, brows, bridge, nostrils, eyes, lip(0.35 * a, 0.12 * b, 7, 7),
                             lip(0.25 * a, 0.05 * b, 5, 5)])
    assert points.shape == (68, 2)
    return points.astype(np.float32)


def face_box(points: np.ndarray) -> np.ndarray:
    return np.r_[points.min(0), points.max(0), 0.99].astype(np.float32)


class FakeFaceAlignment:
    """Records what it is given; finds the class-level ``faces`` in any frame that is not black."""

    faces: ClassVar[list[np.ndarray]] = []
    made: ClassVar[list[dict]] = []

    def __init__(self, landmarks_type, network_size=4, device="cuda", face_detector="sfd", compile=True):
        FakeFaceAlignment.made.append({"kind": landmarks_type, "device": device, "detector": face_detector,
                                        "compile": compile})
        self.face_detector = self
        self.detector_inputs: list[np.ndarray] = []
        self.landmark_inputs: list[np.ndarray] = []

    def detect_from_batch(self, tensor):
        found = []
        for image in tensor:
            self.detector_inputs.append(image.permute(1, 2, 0).numpy())
            found.append([] if image.max() == 0 else [face_box(p) for p in self.faces])
        return found

    def get_landmarks_from_image(self, image, detected_faces=None):
        self.landmark_inputs.append(image)
        assert detected_faces[0].dtype == np.float64  # the real crop fails on float32 boxes with torch 2.x
        return [p for p in self.faces if np.allclose(face_box(p)[:4], detected_faces[0][:4])] or None


@pytest.fixture
def fake_fa(monkeypatch: pytest.MonkeyPatch) -> type[FakeFaceAlignment]:
    module = types.ModuleType("face_alignment")
    module.FaceAlignment = FakeFaceAlignment
    module.LandmarksType = types.SimpleNamespace(TWO_D=1)
    monkeypatch.setitem(sys.modules, "face_alignment", module)
    monkeypatch.setattr(FakeFaceAlignment, "faces", [])
    monkeypatch.setattr(FakeFaceAlignment, "made", [])
    return FakeFaceAlignment


def frame(bgr: tuple[int, int, int] = (200, 100, 50)) -> np.ndarray:
    return np.full((H, W, 3), bgr, np.uint8)


FACE = synthetic_face(160, 100, 50)


def test_to_kept_follows_the_mesh_order():
    kept = fan.to_kept(FACE)
    assert kept.shape == (len(KEPT), 2) and kept.dtype == np.float32
    oval = kept[OVAL]
    np.testing.assert_allclose(oval[FACE_OVAL.index(454)], FACE[16], atol=1e-4)  # image-right ear
    np.testing.assert_allclose(oval[FACE_OVAL.index(234)], FACE[0], atol=1e-4)   # image-left ear
    np.testing.assert_allclose(oval[FACE_OVAL.index(152)], FACE[8], atol=1e-3)   # chin
    lips = kept[LIPS]
    np.testing.assert_allclose(lips[0], FACE[48], atol=1e-4)   # MediaPipe 61: image-left corner
    np.testing.assert_allclose(lips[10], FACE[54], atol=1e-4)  # MediaPipe 291: image-right corner
    assert (lips[1:10, 1] < FACE[48, 1]).all() and (lips[11:, 1] > FACE[48, 1]).all()  # upper, then lower
    np.testing.assert_array_equal(kept[BROWS], FACE[17:27])
    np.testing.assert_array_equal(kept[NOSE], FACE[[30, 33, 31, 35]])
    top = oval[FACE_OVAL.index(10)]
    assert abs(top[0] - 160) < 1 and top[1] == pytest.approx(FACE[17:27, 1].min())


def test_box_spans_jaw_and_above_the_brows():
    x0, y0, x1, y1 = _boxes_from_points(fan.to_kept(FACE)[None])[0]
    assert (x0, x1) == pytest.approx((FACE[:17, 0].min(), FACE[:17, 0].max()), abs=1e-3)
    assert y1 == pytest.approx(FACE[8, 1], abs=1e-3)
    assert y0 < FACE[17:27, 1].min()


def test_lower_face_mask_covers_the_mouth_not_the_eyes():
    kept = fan.to_kept(FACE)
    box = _boxes_from_points(kept[None])[0]
    rect = crop_rect(box, (0, 10, 0, 0), W, H)
    mask = lower_face_mask(kept, rect)

    def at(p: np.ndarray) -> float:
        return float(mask[round(p[1]) - rect[1], round(p[0]) - rect[0]])

    assert at(FACE[48:60].mean(0)) > 0.9
    assert at(FACE[57]) > 0.5  # lower lip
    assert max(at(p) for p in FACE[36:48]) == 0.0  # eyes
    assert max(at(p) for p in FACE[17:27]) == 0.0  # brows


def test_locator_hands_rgb_and_maps_the_chosen_face(fake_fa):
    fake_fa.faces = [FACE]
    locate = fan.FanLocator.load("cpu", allow_download=True)
    found = locate([frame((200, 100, 50)), frame((0, 0, 0))])
    np.testing.assert_array_equal(found[0], fan.to_kept(FACE))
    assert found[1] is None  # the black frame has no face
    model = locate.detector.model
    for seen in (model.detector_inputs[0], model.landmark_inputs[0]):
        assert tuple(seen[0, 0]) == (50, 100, 200)
    assert len(model.landmark_inputs) == 1  # FAN only runs where a face was detected
    assert fake_fa.made == [{"kind": 1, "device": "cpu", "detector": "sfd", "compile": False}]


def test_face_choice_largest_center_and_keeping_the_previous(fake_fa):
    big_aside, small_centre = synthetic_face(60, 80, 45), synthetic_face(160, 90, 25)
    fake_fa.faces = [small_centre, big_aside]
    largest = fan.FanLocator.load("cpu", allow_download=True)
    centre = fan.FanLocator.load("cpu", choice="center", allow_download=True)
    np.testing.assert_array_equal(largest([frame()])[0], fan.to_kept(big_aside))
    np.testing.assert_array_equal(centre([frame()])[0], fan.to_kept(small_centre))
    fake_fa.faces = [small_centre]
    keeper = fan.FanLocator.load("cpu", allow_download=True)
    keeper([frame()])
    fake_fa.faces = [small_centre, big_aside]
    np.testing.assert_array_equal(keeper([frame()])[0], fan.to_kept(small_centre))


def test_load_refuses_when_weights_are_absent(fake_fa, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="face-alignment"):
        fan.FanLocator.load("cpu")
    assert fake_fa.made == []


def test_load_without_the_package_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    for allow_download in (False, True):
        with pytest.raises(ModelError, match="not installed"):
            fan.FanLocator.load("cpu", allow_download=allow_download)


API_1_5 = """models_urls = {'2DFAN-4': 'https://example.org/python-fan/2DFAN4-11f355bf06.pth.tar'}"""
API_1_4 = """
default_model_urls = {'2DFAN-4': 'https://example.org/python-fan/2DFAN4-cd938726ad.zip'}
models_urls = {'1.6': {'2DFAN-4': 'https://example.org/python-fan/2DFAN4_1.6-c827573f02.zip'}}
"""
SFD = """models_urls = {'s3fd': 'https://example.org/python-fan/s3fd-619a316812.pth'}"""


def install_fake_package(root: Path, api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    package = root / "face_alignment"
    (package / "detection" / "sfd").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / "api.py").write_text(textwrap.dedent(api))
    (package / "detection" / "sfd" / "sfd_detector.py").write_text(SFD)
    monkeypatch.delitem(sys.modules, "face_alignment", raising=False)
    monkeypatch.syspath_prepend(str(root))


@pytest.mark.parametrize("api, fan_file", [(API_1_5, "2DFAN4-11f355bf06.pth.tar"),
                                           (API_1_4, "2DFAN4-cd938726ad.zip")])
def test_weights_present_only_with_both_files(api, fan_file, tmp_path, monkeypatch):
    install_fake_package(tmp_path / "site", api, monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    assert not fan.fan_weights_present()
    (checkpoints / "s3fd-619a316812.pth").write_bytes(b"x")
    assert not fan.fan_weights_present()
    (checkpoints / fan_file).write_bytes(b"x")
    assert fan.fan_weights_present()


def test_weights_absent_without_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert not fan.fan_weights_present()


def test_engine_picks_the_backend_and_keeps_tracks_apart(tmp_path, monkeypatch):
    """auto: MediaPipe on the CPU; face-alignment on a GPU once its weights are there. A track
    made by one backend is never reused for the other."""
    import lipsyncd.engine.engine as engine_module
    from lipsyncd.engine import LipSyncEngine, RenderOptions

    video = tmp_path / "v.mp4"
    video.write_bytes(b"same content")
    engine = LipSyncEngine(tmp_path, device="cpu", cache_dir=tmp_path / "cache")
    auto = RenderOptions()
    monkeypatch.setattr(engine_module, "fan_weights_present", lambda: True)
    assert engine._face_backend(auto) == "mediapipe"  # CPU: S3FD + FAN would take seconds a frame
    cpu_path = engine._track_cache_path(video, auto)
    engine.device = torch.device("cuda")
    assert engine._face_backend(auto) == "face-alignment"
    assert engine._track_cache_path(video, auto) != cpu_path
    monkeypatch.setattr(engine_module, "fan_weights_present", lambda: False)
    assert engine._face_backend(auto) == "mediapipe"
    assert engine._face_backend(RenderOptions(face_backend="face-alignment")) == "face-alignment"
