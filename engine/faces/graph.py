"""Run a converted TFLite model (MediaPipe's face detector or face mesh) with torch.

Why an interpreter and not a hand-written network: both models are plain feed-forward graphs of a
handful of op kinds, so replaying their op list is shorter than re-deriving two architectures and
cannot drift from the original wiring. ``tools/convert_mediapipe_faces.py`` writes a model as two
files in ``weights/``:

- ``<name>.json``: ``{"source": {...}, "input": id, "outputs": [{"id", "name", "shape"}], "ops": [...]}``
  where every op is ``{"op": kind, "in": [tensor ids], "out": id, ...attributes}``. Tensor ids are
  the TFLite tensor indices, so an op can be traced back to the original file. Everything TFLite
  decided from static shapes (TF "SAME" padding, which is asymmetric for stride 2) is already
  resolved into explicit ``pad: [top, bottom, left, right]``.
- ``<name>.npz``: the constant tensors, keyed ``"t<tensor id>"``, already in torch layout (conv
  weights OIHW, depthwise weights C1HW) and in the dtype MediaPipe stored (float16): computing
  in float32 from them is exactly what the TFLite runtime's DEQUANTIZE does.

Activations run NCHW; inputs and outputs use TFLite's NHWC layout so results compare one to one
with the reference interpreter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ModelError

WEIGHTS_DIR = Path(__file__).parent / "weights"

Op = dict[str, Any]


class ConvertedGraph(torch.nn.Module):
    """One converted model: ``forward(x_nhwc) -> [outputs in NHWC]``, batched, any device."""

    def __init__(self, spec: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self._input: int = spec["input"]
        self._outputs: list[int] = [o["id"] for o in spec["outputs"]]
        self._ops: list[Op] = spec["ops"]
        for op in self._ops:  # a damaged file fails here, at load time, not mid-render
            if op["op"] not in _KERNELS:
                raise ValueError(f"unknown op {op['op']!r}")
            missing = {op[k] for k in ("weight", "bias", "alpha") if k in op} - arrays.keys()
            if missing:
                raise ValueError(f"missing tensors {sorted(missing)}")
        for key, value in arrays.items():
            self.register_buffer(key, torch.from_numpy(value.astype(np.float32)))
        # Free each activation after its last reader, so large GPU batches keep few maps alive.
        last_use: dict[int, int] = {}
        for index, op in enumerate(self._ops):
            for tensor in op["in"]:
                last_use[tensor] = index
        self._dead_after: list[list[int]] = [[] for _ in self._ops]
        for tensor, index in last_use.items():
            if tensor not in self._outputs:
                self._dead_after[index].append(tensor)

    @classmethod
    def load(cls, name: str, folder: Path = WEIGHTS_DIR) -> ConvertedGraph:
        """Read ``<name>.json`` + ``<name>.npz``; raise :class:`ModelError` if they are unusable."""
        spec_path, array_path = folder / f"{name}.json", folder / f"{name}.npz"
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
            with np.load(array_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
            return cls(spec, arrays)
        except (OSError, ValueError, KeyError) as error:
            raise damaged(name, folder, error) from error

    def forward(self, x_nhwc: torch.Tensor) -> list[torch.Tensor]:
        """Run the graph on a float32 NHWC batch; return its outputs in TFLite's order and layout."""
        values: dict[int, torch.Tensor] = {self._input: x_nhwc.permute(0, 3, 1, 2)}
        for op, dead in zip(self._ops, self._dead_after, strict=True):
            values[op["out"]] = _KERNELS[op["op"]](self, op, [values[i] for i in op["in"]])
            for tensor in dead:
                del values[tensor]
        return [_to_nhwc(values[i]) for i in self._outputs]

    def constant(self, key: str) -> torch.Tensor:
        return getattr(self, key)


def damaged(name: str, folder: Path, error: Exception) -> ModelError:
    """The error for a face model whose files cannot be read or make no model."""
    return ModelError(f"The face model '{name}' in {folder} is missing or damaged ({error}). "
                      "Reinstall lipsyncd, or rebuild the files with tools/convert_mediapipe_faces.py.")


def _to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if x.dim() == 4 else x


def _activation(op: Op, x: torch.Tensor) -> torch.Tensor:
    """The op's fused activation, in place: ``x`` is always the op's own fresh output."""
    return x.relu_() if op.get("act") == "relu" else x


def _pad_spatial(x: torch.Tensor, pad: list[int], fill: float = 0.0) -> tuple[torch.Tensor, tuple[int, int]]:
    """Split [top, bottom, left, right] into a symmetric pad that conv/pool do themselves and, when
    TFLite's padding is lopsided (stride 2 "SAME"), an explicit pad with ``fill``."""
    top, bottom, left, right = pad
    if top == bottom and left == right:
        return x, (top, left)
    return F.pad(x, (left, right, top, bottom), value=fill), (0, 0)


def _conv(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    x, padding = _pad_spatial(inputs[0], op["pad"])
    weight = graph.constant(op["weight"])
    y = F.conv2d(x, weight, graph.constant(op["bias"]), stride=op["stride"], padding=padding,
                 groups=op["groups"])
    return _activation(op, y)


def _max_pool(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    # TFLite's pooling ignores padded cells, i.e. they count as -inf, which torch's own padding matches.
    x, padding = _pad_spatial(inputs[0], op["pad"], fill=float("-inf"))
    return F.max_pool2d(x, op["kernel"], op["stride"], padding)


def _add(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    return _activation(op, inputs[0] + inputs[1])


def _prelu(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    return F.prelu(inputs[0], graph.constant(op["alpha"]))


def _pad(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    (_, _), (top, bottom), (left, right), (front, back) = op["pad"]  # NHWC pairs, batch never padded
    return F.pad(inputs[0], (left, right, top, bottom, front, back))


def _resize_bilinear(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    # The converter only accepts half_pixel_centers=True, align_corners=False: torch's default.
    return F.interpolate(inputs[0], size=op["size"], mode="bilinear", align_corners=False)


def _depth_to_space(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    # TFLite orders the moved channels (row, col, channel); torch's pixel_shuffle wants (channel,
    # row, col), so the permutation is spelled out.
    x, block = inputs[0], op["block"]
    n, c, h, w = x.shape
    x = x.reshape(n, block, block, c // (block * block), h, w)
    return x.permute(0, 3, 4, 1, 5, 2).reshape(n, c // (block * block), h * block, w * block)


def _reshape(graph: ConvertedGraph, op: Op, inputs: list[torch.Tensor]) -> torch.Tensor:
    # TFLite reshapes NHWC memory; the batch dimension stays whatever the caller gave.
    return _to_nhwc(inputs[0]).reshape(inputs[0].shape[0], *op["shape"][1:])


_KERNELS: dict[str, Callable[[ConvertedGraph, Op, list[torch.Tensor]], torch.Tensor]] = {
    "conv": _conv,
    "max_pool": _max_pool,
    "add": _add,
    "prelu": _prelu,
    "pad": _pad,
    "resize_bilinear": _resize_bilinear,
    "depth_to_space": _depth_to_space,
    "reshape": _reshape,
}
