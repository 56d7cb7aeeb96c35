"""Deterministic Wav2Lip weights for tests: the conformance fixture's weight rule.

Trained weights cannot be downloaded here, so tests use weights defined by a rule (a splitmix64
hash of key and index) that the reference implementation was also run with: the golden model
output in ``tests/fixtures/wav2lip`` was computed from exactly these numbers.
End-to-end tests call :func:`write_checkpoint` to put a ``wav2lip_gan.pth`` in a temp models dir.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

import numpy as np
import torch

from lipsyncd.engine.wav2lip import Wav2Lip

_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _uniform(key: str, n: int) -> np.ndarray:
    """``n`` float64 values in [0, 1): splitmix64 of ``index + crc32(key) * golden``."""
    seed = np.uint64((zlib.crc32(key.encode("utf-8")) * _GOLDEN) % 2**64)
    x = np.arange(n, dtype=np.uint64) + seed  # uint64 arrays wrap silently, as the rule wants
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def rule_value(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The rule's tensor for one state_dict key (no ``module.`` prefix)."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    u = _uniform(key, int(np.prod(shape, dtype=np.int64)))
    if key.endswith("running_var"):
        values = 1 + 0.5 * u
    elif key.endswith(("running_mean", "bias")):
        values = 0.1 * (2 * u - 1)
    elif key.endswith("weight") and len(shape) == 4:
        values = (2 * u - 1) * np.sqrt(3 / np.prod(shape[1:]))
    elif key.endswith("weight") and len(shape) == 1:
        values = 1 + 0.1 * (2 * u - 1)
    else:
        raise ValueError(f"the weight rule has no case for {key} {shape}")
    return torch.from_numpy(values.reshape(shape).astype(np.float32))


@functools.cache
def rule_state_dict() -> dict[str, torch.Tensor]:
    """Every entry of the Wav2Lip state_dict, in order, with the rule's values.

    Computed once per test process and shared: copy before modifying a tensor in place.
    """
    with torch.device("meta"):
        layout = Wav2Lip().state_dict()
    return {key: rule_value(key, tuple(t.shape)) for key, t in layout.items()}


def write_checkpoint(path: str | Path, gan: bool = True) -> Path:
    """Write an official-format checkpoint (``module.`` keys plus training bookkeeping).

    ``gan`` only changes the bookkeeping, as between the two official files; the weights are
    the rule's either way.
    """
    path = Path(path)
    state = {"module." + k: v for k, v in rule_state_dict().items()}
    torch.save({
        "state_dict": state,
        "global_step": 262_000 if gan else 250_000,
        "global_epoch": 1_000 if gan else 950,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.5, 0.999), "params": [0, 1]}]},
    }, path)
    return path


def layout_state_dict() -> dict[str, torch.Tensor]:
    """Right keys, shapes and dtypes, every value zero, almost no storage.

    Each tensor is a single zero broadcast to its shape (stride 0), so a checkpoint of it is a
    few tens of KB instead of 145 MB: enough for tests of layout checks, useless for rendering.
    """
    with torch.device("meta"):
        layout = Wav2Lip().state_dict()
    return {k: torch.zeros((), dtype=t.dtype).expand(t.shape) for k, t in layout.items()}


def write_layout_checkpoint(path: str | Path) -> Path:
    """A tiny checkpoint that passes the strict loader's layout check (see layout_state_dict)."""
    path = Path(path)
    torch.save({"state_dict": {"module." + k: v for k, v in layout_state_dict().items()}}, path)
    return path


GOLDEN = Path(__file__).parent / "fixtures" / "wav2lip"
"""The conformance fixture: the reference's inputs and its output for them with these weights."""


def golden_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The golden inputs: mel windows, and faces as (masked face, face), BGR, 0..1, NCHW."""
    mel = torch.from_numpy(np.load(GOLDEN / "model_input_mel.npy"))
    faces = np.load(GOLDEN / "faces_bgr_uint8.npy").astype(np.float32) / 255.0
    masked = faces.copy()
    masked[:, 48:] = 0.0
    face = np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2)
    return mel, torch.from_numpy(np.ascontiguousarray(face))
