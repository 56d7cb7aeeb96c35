"""Per-render options: one typed object, validated from plain mappings (config or job.yaml).

Validation lives here, next to the fields, so the daemon's config loader and its job.yaml
parser report the same precise error ("engine.loop: must be one of pingpong, loop; got 'x'")
without knowing what the engine does with each option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LOOP_MODES = ("pingpong", "loop")
FACE_CHOICES = ("largest", "center")
FACE_BACKENDS = ("auto", "mediapipe", "face-alignment")
MODELS = ("wav2lip", "musetalk")
CHECKPOINTS = ("wav2lip_gan", "wav2lip")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower")
DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "int8")
RUNTIMES = ("auto", "torch", "openvino")


@dataclass(frozen=True)
class RenderOptions:
    """How one video is rendered. Defaults are what a user who sets nothing should get."""

    model: str = "wav2lip"
    """Which lip-sync model: ``wav2lip`` (96 px face, fast, research-only weights) or
    ``musetalk`` (MuseTalk 1.5: 256 px face, sharper, commercial-friendly, needs a GPU to be quick)."""
    checkpoint: str = "wav2lip_gan"
    """Which Wav2Lip weights: ``wav2lip_gan`` (sharper, the usual choice) or ``wav2lip``."""
    precision: str = "fp32"
    """How Wav2Lip runs on a CPU: ``fp32`` (the reference's numbers) or ``int8`` (OpenVINO: on CPUs
    with VNNI the network ~5× and a whole render ~1.9× faster, a slightly different picture; needs
    the ``int8`` extra). A GPU
    runs it in fp16 either way."""
    runtime: str = "auto"
    """What runs the networks in fp32 on a CPU, Wav2Lip and MediaPipe's face models: ``openvino``
    (Wav2Lip 1.1-1.4× torch's speed, the face pass ~2×, the same numbers within float rounding;
    needs the ``openvino`` extra), ``torch``, or ``auto``: OpenVINO when it is installed and there
    is a cache folder (the service always has one) to keep its converted networks in, else torch.
    A GPU runs torch; int8 runs Wav2Lip through OpenVINO."""
    loop: str = "pingpong"
    """Audio longer than the video: play the video forth and back (``pingpong``) or restart it (``loop``)."""
    face: str = "largest"
    """Several faces in a frame: re-animate the ``largest`` or the one nearest the ``center``."""
    face_backend: str = "auto"
    """What finds faces: ``mediapipe`` (built in), ``face-alignment`` (S3FD + FAN, the detector
    Wav2Lip was trained with; needs its package and weights), or ``auto``: face-alignment on a
    GPU when its weights are already present, else MediaPipe."""
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    """Extra pixels around the face box (top, bottom, left, right), as Wav2Lip's ``--pads``."""
    crf: int = 18
    """x264 constant rate factor: 18 is visually lossless, higher is smaller and softer."""
    preset: str = "veryfast"
    """x264 speed preset: faster presets encode quicker at a slightly larger file."""
    batch_size: int = 128
    """Frames per network batch; halved automatically when the GPU runs out of memory."""
    smooth_frames: int = 7
    """How far (frames, a Gaussian's sigma) face boxes are smoothed while the head is still, so a
    still camera gives a still crop; lightly while it moves, so the crop never lags."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "engine",
                     base: RenderOptions | None = None) -> RenderOptions:
        """Build options from a YAML mapping, on top of ``base``; raise ``ValueError`` naming
        ``where.key`` and the allowed values for the first bad entry."""
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown option; known options are {', '.join(sorted(known))}")
        updates = {key: _validate(f"{where}.{key}", key, value) for key, value in values.items()}
        return dataclasses.replace(base, **updates)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for logs, reports and the job record."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name}: must be a whole number from {low} to {high}; got {value!r}")
    return value


def _validate(name: str, key: str, value: Any) -> Any:
    if key == "model":
        return _choice(name, value, MODELS)
    if key == "checkpoint":
        return _choice(name, value, CHECKPOINTS)
    if key == "precision":
        return _choice(name, value, PRECISIONS)
    if key == "runtime":
        return _choice(name, value, RUNTIMES)
    if key == "loop":
        return _choice(name, value, LOOP_MODES)
    if key == "face":
        return _choice(name, value, FACE_CHOICES)
    if key == "face_backend":
        return _choice(name, value, FACE_BACKENDS)
    if key == "preset":
        return _choice(name, value, PRESETS)
    if key == "crf":
        return _int(name, value, 0, 51)
    if key == "batch_size":
        return _int(name, value, 1, 4096)
    if key == "smooth_frames":
        return _int(name, value, 1, 60)
    if key == "pads":
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise ValueError(f"{name}: must be a list of four whole numbers [top, bottom, left, right]; got {value!r}")
        return tuple(_int(f"{name}[{i}]", v, -200, 200) for i, v in enumerate(value))
    raise AssertionError(key)  # unreachable: from_mapping rejects unknown keys first


@dataclass(frozen=True)
class Progress:
    """Where a render stands; passed to the caller's progress callback every few frames."""

    frames_done: int
    frames_total: int
    stage: str = "render"

    @property
    def fraction(self) -> float:
        return self.frames_done / self.frames_total if self.frames_total else 0.0


@dataclass(frozen=True)
class RenderResult:
    """What a finished render produced, for the job report."""

    output: str
    frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    frames_with_face: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
