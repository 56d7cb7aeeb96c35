"""The second face backend: face-alignment's S3FD detector and FAN 68-point landmarks.

Wav2Lip was trained on S3FD face boxes, so users who have those weights can analyse faces with
the very detector the network was trained with. The package downloads its weights on first use,
which an offline machine cannot do; :func:`fan_weights_present` tells whether they are already
in torch hub's checkpoint folder, so the engine picks this backend only when it will work.

The backend plugs into :class:`~.locate.FaceLocator` unchanged: :class:`S3fdDetector` and
:class:`FanMesh` have the detector's and the mesh's shape, so the face choice (largest / center,
keeping the previous face) is the very same code. FAN's 68 iBUG points are mapped onto the kept
MediaPipe layout by :func:`to_kept`, so the track, boxes and blend mask never know the difference.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch

from ..errors import ModelError
from .detector import Detection, box_of
from .locate import FaceLocator
from .mesh import FACE_OVAL, NUM_POINTS
from .track import BROWS, KEPT, LIPS, NOSE, OVAL, POINTS_68

_JAW_START, _JAW_STOP = FACE_OVAL.index(454), FACE_OVAL.index(234) + 1
"""Oval slots from the image-right ear (454) through the chin to the image-left ear (234)."""
_NOSE_68 = [30, 33, 31, 35]
"""Tip, base, image-left and image-right nostril: the 68-point twins of MediaPipe's 1, 2, 98, 327."""
_NO_KEYPOINTS = np.zeros((0, 2), np.float32)
_NO_KEYPOINTS.flags.writeable = False


def _resample(polyline: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced by arc length along ``polyline``, both ends included."""
    steps = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    at = np.linspace(0.0, along[-1], n)
    return np.stack([np.interp(at, along, polyline[:, k]) for k in (0, 1)], axis=1)


_FIRST_USE = np.array([list(KEPT).index(mesh_id) for mesh_id in KEPT])
"""Per kept slot, the first slot of the same mesh id: the 68-point scheme shares some ids with the
oval, lips and brows, and a slot that repeats an id holds what the first one holds (as the mesh
gives them), so the mask's shapes stay as drawn above."""


def to_kept(points68: np.ndarray) -> np.ndarray:
    """The (len(KEPT), 2) float32 kept landmarks of one face from its (68, 2+) iBUG points.

    Brows (17..26) and lips (48..59, split at the corners 48 and 54 like MediaPipe's 61 and 291)
    map point for point or resampled along their contours. The 68 layout has no forehead, so the
    oval's jaw part is the jaw line 16..0 resampled, and its upper part runs from each jaw end
    straight up to brow height and across between them: the oval's x-extent stays the jaw's, the
    chin stays its lowest point and every forehead point lies above the nose, so the S3FD-like box
    and the lower-face mask come out as they do from the mesh.
    """
    p = np.asarray(points68, np.float64)[:, :2]
    kept = np.empty((len(KEPT), 2), np.float64)
    oval = kept[OVAL]
    jaw = p[16::-1]  # image-right ear to image-left ear, the oval's direction
    oval[_JAW_START:_JAW_STOP] = _resample(jaw, _JAW_STOP - _JAW_START)
    brow_y = p[17:27, 1].min()
    forehead = np.array([jaw[-1], (jaw[-1, 0], brow_y), (jaw[0, 0], brow_y), jaw[0]])
    upper = _resample(forehead, len(oval) - (_JAW_STOP - _JAW_START) + 2)[1:-1]
    after_jaw = len(oval) - _JAW_STOP  # the oval goes on from the left ear over the top (slot 0)
    oval[_JAW_STOP:], oval[:_JAW_START] = upper[:after_jaw], upper[after_jaw:]
    lips = kept[LIPS]
    corner = len(lips) // 2
    lips[:corner + 1] = _resample(p[48:55], corner + 1)
    lips[corner:] = _resample(np.concatenate([p[54:60], p[48:49]]), len(lips) - corner + 1)[:-1]
    kept[BROWS] = p[17:27]
    kept[NOSE] = p[_NOSE_68]
    kept[POINTS_68] = p[:68]
    return kept[_FIRST_USE].astype(np.float32)


def _module_dicts(path: Path) -> dict[str, Any]:
    """The module-level literal dict assignments of a source file, read without importing it
    (face_alignment's import pulls in numba and scikit-image just to list two URLs)."""
    found: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = ast.literal_eval(node.value)
    return found


def _weight_files() -> list[str] | None:
    """File names the installed face_alignment downloads for S3FD and 2D FAN, None if not installed.

    1.5 keeps one ``models_urls``; 1.4 keys it by torch version and falls back to
    ``default_model_urls``, which the lookup below mirrors.
    """
    try:
        spec = importlib.util.find_spec("face_alignment")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    api = _module_dicts(root / "api.py")
    fan_urls = api["models_urls"]
    torch_version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    fan_urls = fan_urls.get(torch_version, api.get("default_model_urls", fan_urls))
    s3fd_url = _module_dicts(root / "detection" / "sfd" / "sfd_detector.py")["models_urls"]["s3fd"]
    return [Path(urlparse(url).path).name for url in (s3fd_url, fan_urls["2DFAN-4"])]


def fan_weights_present() -> bool:
    """face-alignment is installed and its S3FD and FAN weights are already in torch hub's
    checkpoint folder (``$TORCH_HOME/hub/checkpoints``), so loading it downloads nothing."""
    try:
        names = _weight_files()
    except (OSError, SyntaxError, ValueError, KeyError, TypeError, AttributeError):
        return False  # a layout this code does not know: treat as absent, MediaPipe stays in use
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return names is not None and all((folder / name).is_file() for name in names)


def _rgb(frame_bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame_bgr[..., ::-1])


class S3fdDetector:
    """face-alignment's S3FD with :class:`~.detector.FaceDetector`'s ``detect`` (frames BGR).

    S3FD runs on whole frames at full resolution, so frames go through it a few at a time:
    a 1080p frame alone needs about a gigabyte of activations.
    """

    def __init__(self, model: Any, batch_size: int = 4) -> None:
        self.model = model
        self.batch_size = batch_size

    def detect(self, frames_bgr: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Per frame its faces; the boxes are S3FD's own, without keypoints (S3FD gives none)."""
        found: list[list[Detection]] = []
        for start in range(0, len(frames_bgr), self.batch_size):
            rgb = np.stack([_rgb(f) for f in frames_bgr[start:start + self.batch_size]])
            for boxes in self.model.face_detector.detect_from_batch(torch.from_numpy(rgb).permute(0, 3, 1, 2)):
                found.append([Detection(box_of(b[:4]), float(b[4]), _NO_KEYPOINTS)
                              for b in boxes])
        return found


class FanMesh:
    """FAN landmarks with :class:`~.mesh.FaceMesh`'s ``landmarks``: the 68 points are given in
    the mesh's 468-point layout (only the :data:`~.track.KEPT` rows filled, NaN elsewhere), so
    :class:`~.locate.FaceLocator` takes what it always takes. Presence is 1 where FAN answered."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def landmarks(self, frames_bgr: Sequence[np.ndarray], boxes: np.ndarray,
                  angles: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``angles`` is accepted and unused: FAN aligns the face in its box itself."""
        points = np.full((len(frames_bgr), NUM_POINTS, 3), np.nan, np.float32)
        presence = np.zeros(len(frames_bgr), np.float32)
        for i, (frame, box) in enumerate(zip(frames_bgr, boxes, strict=True)):
            # float64: face_alignment's crop writes box-derived numpy scalars into torch tensors,
            # which current torch refuses for float32 scalars.
            box64 = np.asarray(box, np.float64)
            faces = self.model.get_landmarks_from_image(_rgb(frame), detected_faces=[box64])
            if faces:
                points[i, KEPT, :2] = to_kept(faces[0])
                presence[i] = 1.0
        return points, presence


class FanLocator(FaceLocator):
    """A :class:`~.locate.FaceLocator` whose detector is S3FD and whose landmarks are FAN's."""

    detect_every = 1  # FAN has no face-presence score to say when it lost the face: detect every frame
    misses_keep_face = False  # ... and where S3FD finds nothing, there is no face
    refine = False  # FAN aligns the face in its box itself: a second run would answer the same
    search_turns = ()  # S3FD takes seconds a frame on a CPU: no turned retries

    @classmethod
    def load(cls, device: torch.device | str, choice: str = "largest",
             allow_download: bool = False) -> FanLocator:
        """Load face-alignment on ``device``. Raises :class:`ModelError` when it is not installed,
        or its weights are absent and ``allow_download`` is false, or loading fails."""
        try:
            import face_alignment
        except ImportError as exc:
            raise ModelError("The face-alignment face finder is not installed on this machine; install "
                             "lipsyncd with the 'face-alignment' extra or use the default face finder.") from exc
        if not allow_download and not fan_weights_present():
            raise ModelError("The face-alignment face finder is not ready: its weights (S3FD and 2DFAN4) are "
                             "not in the torch hub checkpoint folder. Use the default face finder, or allow "
                             "face-alignment to download them once on a machine with internet access.")
        api = face_alignment.FaceAlignment
        kind = getattr(face_alignment.LandmarksType, "TWO_D", None) or face_alignment.LandmarksType._2D
        # 1.5 compiles FAN by default: a C toolchain and a cache under ~/.cache that a service may lack.
        extra = {"compile": False} if "compile" in inspect.signature(api).parameters else {}
        try:
            model = api(kind, device=str(device), face_detector="sfd", **extra)
        except Exception as exc:  # downloads and checkpoint loading fail in many library-specific ways
            raise ModelError(f"The face-alignment face finder could not be loaded: {exc}") from exc
        return cls(S3fdDetector(model), FanMesh(model), choice)
