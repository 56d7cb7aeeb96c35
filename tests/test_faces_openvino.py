"""The face models through OpenVINO on a CPU (engine/faces/runtime.py): MediaPipe's golden numbers
held as through torch, the converted models kept in and read back from the cache, and which
runtime a render's face pass gets.

The conformance tests of tests/test_faces.py run here a second time, unchanged, on detector and
mesh fixtures that run through OpenVINO (the fixtures below replace theirs by name): the same
goldens, the same tolerances.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_face_clips import GLASSES, SMOOTH, frames_of
from test_faces import (  # noqa: F401 - fixtures and tests, collected here again on the OpenVINO fixtures
    _npy,
    detections,
    entries,
    images,
    small_face,
    test_detector_finds_the_face_mediapipe_found,
    test_detector_model_matches_reference_interpreter,
    test_locator_on_a_small_face_lands_where_mediapipe_puts_it,
    test_mesh_from_detector_box_lands_where_mediapipe_puts_it,
    test_mesh_model_matches_reference_interpreter,
    test_mesh_on_a_small_face_lands_where_mediapipe_puts_it,
    test_mesh_tracks_from_its_own_box,
    test_mesh_z_is_in_pixels_like_x,
    test_model_batches_are_independent,
    test_mouth_keypoint_lies_in_the_lips,
    test_no_face_in_noise_or_black,
)

from lipsyncd.engine import LipSyncEngine, RenderOptions
from lipsyncd.engine.errors import ModelError
from lipsyncd.engine.faces import detector as detector_module
from lipsyncd.engine.faces import mesh as mesh_module
from lipsyncd.engine.faces.detector import FaceDetector
from lipsyncd.engine.faces.graph import ConvertedGraph
from lipsyncd.engine.faces.locate import FaceLocator
from lipsyncd.engine.faces.mesh import FaceMesh
from lipsyncd.engine.faces.runtime import CACHE_VERSION, FaceRuntime, OpenVinoGraph, model_digest
from lipsyncd.engine.faces.track import analyse
from lipsyncd.engine.threads import ThreadPlan

MODELS = (detector_module.MODEL_NAME, mesh_module.MODEL_NAME)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine's cache folder, whose ``openvino/`` the models below are converted into."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def openvino_cache(cache_dir: Path) -> Path:
    return cache_dir / "openvino"


@pytest.fixture(scope="module")
def openvino(openvino_cache: Path) -> FaceRuntime:
    return FaceRuntime(openvino=True, cache_dir=openvino_cache)


@pytest.fixture(scope="module")
def face_detector(openvino: FaceRuntime) -> FaceDetector:
    detector = FaceDetector("cpu", runtime=openvino)
    assert isinstance(detector._model, OpenVinoGraph)  # the goldens below are checked through OpenVINO
    return detector


@pytest.fixture(scope="module")
def face_mesh(openvino: FaceRuntime) -> FaceMesh:
    mesh = FaceMesh("cpu", runtime=openvino)
    assert isinstance(mesh._model, OpenVinoGraph)
    return mesh


def _entry(cache: Path, name: str) -> Path:
    return cache / f"{name}-{model_digest(name)}-v{CACHE_VERSION}.xml"


def test_the_converted_models_are_read_back_not_converted_again(face_detector, face_mesh, openvino_cache,
                                                                monkeypatch):
    """The fixtures above converted both models into the cache; a new process (new instances
    here) reads them back instead of converting, and gives the same numbers."""
    import openvino as ov

    assert {p.name for p in openvino_cache.glob("*.xml")} == {_entry(openvino_cache, n).name for n in MODELS}
    monkeypatch.setattr(ov, "convert_model", lambda *a, **k: pytest.fail("converted again"))
    monkeypatch.setattr(ConvertedGraph, "load", lambda *a, **k: pytest.fail("the torch graph was loaded"))
    runtime = FaceRuntime(openvino=True, cache_dir=openvino_cache)
    crops = _npy("landmark_input_u8")
    np.testing.assert_array_equal(FaceMesh("cpu", runtime=runtime).run_model(crops)[0],
                                  face_mesh.run_model(crops)[0])
    inputs = _npy("detector_input_u8")
    np.testing.assert_array_equal(FaceDetector("cpu", runtime=runtime).run_model(inputs)[0],
                                  face_detector.run_model(inputs)[0])


def test_a_damaged_entry_is_converted_again(tmp_path):
    entry = _entry(tmp_path, mesh_module.MODEL_NAME)
    entry.write_text("<net half written")
    points, logits = FaceMesh("cpu", runtime=FaceRuntime(openvino=True, cache_dir=tmp_path)).run_model(
        _npy("landmark_input_u8"))
    np.testing.assert_allclose(points, _npy("landmark_output_points"), rtol=0, atol=1e-3)
    assert entry.read_text().startswith("<?xml")  # replaced by a whole one
    assert entry.with_suffix(".bin").stat().st_size > 1_000_000


def test_without_a_cache_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = OpenVinoGraph(mesh_module.MODEL_NAME, cache_dir=None)
    assert graph.entry is None and list(tmp_path.iterdir()) == []


def test_an_empty_batch_gives_empty_outputs_of_the_right_shapes(face_detector, face_mesh):
    regressors, logits = face_detector.run_model(np.zeros((0, 192, 192, 3), np.uint8))
    assert regressors.shape == (0, 2304, 16) and logits.shape == (0, 2304)
    points, presence = face_mesh.run_model(np.zeros((0, 192, 192, 3), np.uint8))
    assert points.shape == (0, 468, 3) and presence.shape == (0,)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_models_run_on_the_face_stages_threads(openvino_cache, threads):
    graph = OpenVinoGraph(mesh_module.MODEL_NAME, openvino_cache, threads)
    assert graph._compiled._compiled.get_property("INFERENCE_NUM_THREADS") == threads
    assert str(graph._compiled._compiled.get_property("INFERENCE_PRECISION_HINT")) in ("f32", "<Type: 'float32'>")


def test_a_track_through_openvino_is_torchs(face_detector, face_mesh):
    """A real clip where the detector misses twice: the same frames with a face, the same boxes
    within float rounding."""
    frames = frames_of(GLASSES)
    torch.set_num_threads(1)
    with_torch = analyse(frames, FaceLocator.load(torch.device("cpu")), smooth_frames=SMOOTH)
    with_openvino = analyse(frames, FaceLocator(face_detector, face_mesh), smooth_frames=SMOOTH)
    assert with_torch.has_face.all()
    np.testing.assert_array_equal(with_openvino.has_face, with_torch.has_face)
    np.testing.assert_array_equal(with_openvino.fade, with_torch.fade)
    np.testing.assert_allclose(with_openvino.boxes, with_torch.boxes, rtol=0, atol=0.05)
    np.testing.assert_allclose(with_openvino.points, with_torch.points, rtol=0, atol=0.05)


def _runtime_of(locator: FaceLocator) -> str:
    kinds = {type(model._model) for model in (locator.detector, locator.mesh)}  # type: ignore[attr-defined]
    assert len(kinds) == 1
    return {OpenVinoGraph: "openvino", ConvertedGraph: "torch"}[kinds.pop()]


def test_the_runtime_a_cpu_face_pass_gets(models_dir, cache_dir, openvino_cache, face_mesh, tmp_path, monkeypatch):
    """As the network's fp32 (tests/test_openvino_cpu.py): OpenVINO where it is installed and a
    cache keeps its converted models (read back from there), or where asked for; torch where asked
    for, without a cache (converting anew each process costs ~2.4 CPU s, ~300 frames' gain) and on
    a GPU."""
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=cache_dir)
    assert _runtime_of(engine._face_locator(RenderOptions())) == "openvino"
    assert _runtime_of(engine._face_locator(RenderOptions(precision="int8"))) == "openvino"
    assert _runtime_of(engine._face_locator(RenderOptions(runtime="torch"))) == "torch"
    assert engine._face_runtime(RenderOptions()) == FaceRuntime(True, openvino_cache, threads=1)
    two_threads = LipSyncEngine(models_dir, device="cpu", cache_dir=cache_dir,
                                threads=replace(ThreadPlan.for_device("cpu"), faces=2))
    assert two_threads._face_runtime(RenderOptions()).threads == 2  # the face stage's, as torch gets
    uncached = LipSyncEngine(models_dir, device="cpu")
    assert _runtime_of(uncached._face_locator(RenderOptions())) == "torch"
    assert uncached._face_runtime(RenderOptions(runtime="openvino")) == FaceRuntime(True, None, 1)
    engine.device = torch.device("cuda")  # only the choice is looked at: no GPU needed
    assert not engine._face_runtime(RenderOptions(runtime="openvino")).openvino
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the openvino extra were not installed
    bare = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "bare")
    assert _runtime_of(bare._face_locator(RenderOptions())) == "torch"
    with pytest.raises(ModelError, match=r"runtime openvino needs OpenVINO.*lipsyncd\[openvino\].*auto or torch"):
        bare._face_locator(RenderOptions(runtime="openvino"))


def test_openvino_runs_the_face_models_on_a_cpu_only():
    with pytest.raises(ValueError, match="on a CPU"):
        FaceRuntime(openvino=True).load(mesh_module.MODEL_NAME, torch.device("cuda"))
