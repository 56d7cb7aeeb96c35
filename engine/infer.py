"""Running Wav2Lip on batches of face crops: input layout, precision, batch shape, OOM recovery.

Crops travel to the device as uint8 (a quarter of float32's bytes) and are normalised there.
On CUDA the network runs in fp16 with channels-last tensors; when a batch does not fit, the
batch size is halved for the rest of the render instead of failing the job. On a CPU it runs in
fp32 (the reference's numbers, within float rounding) with channels-last tensors, which oneDNN
runs a quarter or more faster than the default layout, in small batches (:data:`CPU_BATCH`), so a
stop request or a progress report never waits long behind the network. The frame loop runs one
batch per core at once, each on one thread (:mod:`.threads`); the model is only read, so this
is safe. Where OpenVINO is installed a CPU runs the fp32 batches through it (:mod:`.openvino_cpu`,
faster, the same numbers), and with ``precision: int8`` (opt-in) in int8 (:mod:`.int8`);
everything around the network stays as it is.

The paste reads only the lower face (:meth:`.blend.MouthMask.first_face_row`), so a batch whose faces are
all read from a render's row down (:func:`rows_from`, planned from the faces the render shows) is
drawn from there (:meth:`.Wav2Lip.forward`'s ``first_row``): exact where it is read, and the
decoder skips a third or more of its rows at its three biggest stages. Every other batch gets
whole faces.

Every call to the network has the same batch size: a short batch is padded. oneDNN compiles
and keeps its kernels per input shape, so batches of every size from 1 to N would grow the
process by hundreds of megabytes (measured: 2.4 GB for the generator alone with batch sizes
1..30, 0.5 GB with a constant 30), and cuDNN's autotuner would tune once per shape.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from .wav2lip import Wav2Lip

log = logging.getLogger(__name__)

CPU_BATCH = 8
"""Frames per network call on a CPU: ~0.6 s of work for one core. Measured per frame (fp32,
channels-last, one thread, interleaved on a busy 2-core box): batch 8, 16 and 32 cost 79, 78
and 85 ms of CPU; batch 1 cost three times batch 8 (266 vs 91 ms, two threads, idle)."""


LOWER_FACE_ROW = 32
"""The row (of 96) from which a batch's faces are drawn when the paste reads nothing above it in
any of them and no plan (:func:`rows_from`) says otherwise. Measured: the paste reads from rows
31-42 on the shared clips (the mask reaches up to the nose tip), and the network alone runs
1.16-1.21× the frames per CPU second from row 32 (1.31× from 40, 1.43× from 48; one thread, batch 8,
interleaved; ``benchmarks/network_levers.py``)."""
ROW_STEP = 4
"""A render's row is a multiple of this: each row is one more network shape (kernels, and on
OpenVINO a converted network of ~145 MB on disk), so rows come in few steps."""
LOWEST_ROW = 24
"""Below this a render draws whole faces: the rows left out would save little."""
HIGHEST_ROW = 48
"""A render draws from here at the lowest (the mouth itself lies below), so there are at most
seven rows (24-48), each converted once per checkpoint for OpenVINO (~145 MB in the cache)."""
ODD_FACES = 0.02
"""The share of a render's faces that may be read from higher up than its row (they go in
whole-face batches), so that a few odd frames do not cost every batch its saving."""


def rows_from(first_rows: np.ndarray) -> int:
    """The row a render's batches are drawn from, given the first row the paste reads of the faces
    it shows (or a sample of them): the highest step of :data:`ROW_STEP` that all of them but
    :data:`ODD_FACES` are read from, at most :data:`HIGHEST_ROW`; 0 (whole faces) when that is below
    :data:`LOWEST_ROW` or there are none. Measured on the shared clips (all frames): 32-40 (rows 31-42
    read; 98 % from 33-42)."""
    if not len(first_rows):
        return 0
    odd = int(len(first_rows) * ODD_FACES)
    row = min(HIGHEST_ROW, int(np.partition(first_rows, odd)[odd]) // ROW_STEP * ROW_STEP)
    return row if row >= LOWEST_ROW else 0


Network = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""What runs the batches: ``(mel (B,1,80,16), face (B,6,96,96), first_row) -> (B,3,R,96)`` in
0..1, BGR: the faces' last R rows, R at least ``96 - first_row`` (all 96 where it ignores it)."""


class MouthGenerator:
    """Callable: (crops uint8 (B,96,96,3) BGR, mel windows (B,80,16), first rows read) → uint8 (B,96,96,3) BGR."""

    cpu_batch = CPU_BATCH
    """Faces per network call at most on a CPU."""

    def __init__(self, model: Wav2Lip | None, device: torch.device, batch_size: int,
                 network: Network | None = None) -> None:
        """``network``: what runs the batches instead of ``model`` itself (on a CPU, OpenVINO's
        fp32 or int8 network: :mod:`.openvino_cpu`, :mod:`.int8`), which then may be None; it gets
        fp32 tensors on the CPU."""
        self.device = device
        self.half = device.type == "cuda"
        self.model = model
        if network is None:
            if model is None:
                raise ValueError("a MouthGenerator needs the model or a network to run the batches")
            # channels-last weights for torch's own runs (a copy of them all: 0.4 s); torch's stubs
            # lack Module.to's memory_format keyword, which torch documents and takes
            self.model = model.to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            if self.half:
                self.model = self.model.half()
                torch.backends.cudnn.benchmark = True  # fixed 96×96 shapes: pick the fastest kernels once
            network = self.model
        self.network: Network = network
        self.batch_size = batch_size

    @property
    def batch_size(self) -> int:
        """Frames per network call; on a CPU at most :attr:`cpu_batch`."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, requested: int) -> None:
        self._batch_size = requested if self.device.type == "cuda" else min(requested, self.cpu_batch)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, mels: np.ndarray, first_rows: np.ndarray | None = None,
                 lower_row: int = LOWER_FACE_ROW) -> np.ndarray:
        """New faces for ``crops``; with ``first_rows`` (per crop, the first row that will be read)
        the faces of a batch all read from ``lower_row`` (:func:`rows_from`) down keep their input's
        rows above it."""
        out = crops.copy()
        start = 0
        while start < len(crops):
            size = self.batch_size
            stop = min(start + size, len(crops))
            row = lower_row if first_rows is not None and first_rows[start:stop].min() >= lower_row else 0
            try:
                generated = self._run(_padded(crops[start:stop], size), _padded(mels[start:stop], size), row)
                out[start:stop, row:] = generated[:stop - start, generated.shape[1] - (crops.shape[1] - row):]
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                log.warning("GPU out of memory: batch size lowered to %d", self.batch_size)
                continue
            start = stop
        return out

    def _run(self, crops: np.ndarray, mels: np.ndarray, first_row: int) -> np.ndarray:
        dtype = torch.float16 if self.half else torch.float32
        faces = torch.from_numpy(crops).to(self.device, non_blocking=True)
        faces = faces.permute(0, 3, 1, 2).to(dtype).div_(255.0)
        masked = faces.clone()
        masked[:, :, faces.shape[2] // 2:] = 0
        face_input = torch.cat([masked, faces], dim=1).contiguous(memory_format=torch.channels_last)
        mel_input = torch.from_numpy(mels).to(self.device, non_blocking=True).to(dtype).unsqueeze(1)
        pred = self.network(mel_input, face_input, first_row)
        pred = pred.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return pred.permute(0, 2, 3, 1).cpu().numpy()


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` with zero items appended up to ``size`` (the network's one input shape)."""
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
