"""What runs the face models: torch on the engine's device, or OpenVINO on a CPU.

Why OpenVINO on a CPU: :class:`.graph.ConvertedGraph` replays a model op by op, and at the face
pass's sizes (one to a few 192×192 images, one thread) much of its time is torch's dispatch of
~100 small ops per model call (117 in the detector, 97 in the mesh), not arithmetic. OpenVINO
compiles the same module (converted from the interpreter itself, so the same wiring and weights)
into fused kernels: measured on one thread (interleaved, a shared 2-core Xeon), the detector
3.3-4 ms an image against torch's 10-12 ms, the mesh 1.5-2 ms against 4-8 ms. The outputs stay
within 1.5e-4 of torch's (the conformance bar against MediaPipe's own runtime is 1e-3).

Each model is compiled for one image at a time (static shape) and a batch is run image by image:
faster than a dynamic batch at the sizes the locator asks for (1-8, varying), measured 3.3 vs 4.8
ms an image for the detector, 1.7 vs 2.3 ms for the mesh.

Converting both models costs 2.3-3.2 CPU s (torch's tracing included); each converted model is kept
in ``<cache>/openvino/``, named by a digest of the model's files (and :data:`CACHE_VERSION`), so
later processes only read and compile them (0.2-0.35 s for both; torch's load takes 0.1-0.2 s). Whole face
passes (decode excluded, ``benchmarks/face_bench.py --runtime torch openvino``): 1.5-2.3× fewer
CPU seconds than through torch, the same frames with a face, boxes within 0.03 px.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import openvino_cpu
from ..errors import ModelError
from .graph import WEIGHTS_DIR, ConvertedGraph, damaged

CACHE_VERSION = 1
"""Bumped when what is kept changes (the input's name or shape, the naming)."""

INPUT_NAME, INPUT_SHAPE = "x_nhwc", (1, 192, 192, 3)
"""The converted model's input (named after :meth:`.graph.ConvertedGraph.forward`'s argument): one
NHWC image, as both face models take 192×192 RGB."""

Graph = Callable[[torch.Tensor], list[torch.Tensor]]
"""A face model: float32 NHWC batch -> its outputs in TFLite's order and layout (torch tensors)."""


@dataclass(frozen=True)
class FaceRuntime:
    """How the face models run: torch on the given device, or (``openvino``, CPU only) OpenVINO
    with ``threads`` threads, keeping converted models in ``cache_dir`` (None: converted anew
    each time a model is loaded)."""

    openvino: bool = False
    cache_dir: Path | None = None
    threads: int = 1

    @property
    def name(self) -> str:
        return "openvino" if self.openvino else "torch"

    def load(self, name: str, device: torch.device) -> Graph:
        """The model ``name`` (``weights/<name>.json`` + ``.npz``), ready to call."""
        if not self.openvino:
            return ConvertedGraph.load(name).to(device).eval()
        if device.type != "cpu":
            raise ValueError(f"OpenVINO runs the face models on a CPU, not on {device}")
        return OpenVinoGraph(name, self.cache_dir, self.threads)


TORCH = FaceRuntime()


class OpenVinoGraph:
    """A face model compiled by OpenVINO for the CPU, called as :class:`.graph.ConvertedGraph` is
    (from any number of threads: one inference request each)."""

    def __init__(self, name: str, cache_dir: Path | None, threads: int = 1, folder: Path = WEIGHTS_DIR) -> None:
        if not openvino_cpu.available():  # refused here, before any work
            raise ModelError(openvino_cpu.MISSING)
        self.entry = cache_dir / f"{name}-{model_digest(name, folder)}-v{CACHE_VERSION}.xml" if cache_dir else None
        model = openvino_cpu.kept(self.entry, lambda: _convert(ConvertedGraph.load(name, folder)))
        self._compiled = openvino_cpu.Compiled(model, streams=1, threads=threads)
        self._empty = [np.zeros((0, *shape[1:]), np.float32) for shape in self._compiled.output_shapes()]

    def __call__(self, x_nhwc: torch.Tensor) -> list[torch.Tensor]:
        images = np.ascontiguousarray(x_nhwc.detach().cpu().numpy(), dtype=np.float32)
        each = [self._compiled.outputs({INPUT_NAME: images[i:i + 1]}) for i in range(len(images))]
        outputs = [np.concatenate(parts) for parts in zip(*each, strict=True)] if each else self._empty
        return [torch.from_numpy(output) for output in outputs]


def _convert(graph: ConvertedGraph) -> Any:
    import openvino as ov

    with torch.inference_mode():
        return ov.convert_model(graph.eval(), example_input=torch.zeros(INPUT_SHAPE),
                                input=[(INPUT_NAME, list(INPUT_SHAPE))])


def model_digest(name: str, folder: Path = WEIGHTS_DIR) -> str:
    """A digest of the model's two files: a converted model is only ever the one of these files."""
    digest = hashlib.sha256()
    for suffix in (".json", ".npz"):
        try:
            digest.update((folder / f"{name}{suffix}").read_bytes())
        except OSError as error:
            raise damaged(name, folder, error) from error
    return digest.hexdigest()[:16]
