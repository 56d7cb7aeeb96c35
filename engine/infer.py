"""Running Wav2Lip on batches of face crops: input layout, precision, batch shape, OOM recovery.

Crops travel to the device as uint8 (a quarter of float32's bytes) and are normalised there.
On CUDA the network runs in fp16 with channels-last tensors; when a batch does not fit, the
batch size is halved for the rest of the render instead of failing the job. On a CPU it runs in
fp32 (the reference's numbers, within float rounding) with channels-last tensors, which oneDNN
runs a quarter or more faster than the default layout, in small batches (:data:`CPU_BATCH`), so a
stop request or a progress report never waits long behind the network. The frame loop runs one
batch per core at once, each on one thread (:mod:`.threads`); the model is only read, so this
is safe. With ``precision: int8`` (opt-in) a CPU runs the same batches through OpenVINO in int8
instead (:mod:`.int8`); everything around the network stays as it is.

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


Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""What runs the batches: ``(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in 0..1, BGR."""


class MouthGenerator:
    """Callable: (crops uint8 (B,96,96,3) BGR, mel windows (B,80,16)) → uint8 (B,96,96,3) BGR."""

    cpu_batch = CPU_BATCH
    """Faces per network call at most on a CPU."""

    def __init__(self, model: Wav2Lip, device: torch.device, batch_size: int, network: Network | None = None) -> None:
        """``network``: what runs the batches instead of ``model`` itself (on a CPU, e.g. the
        int8 model of :mod:`.int8`); it gets fp32 tensors on the CPU."""
        self.device = device
        self.half = device.type == "cuda"
        # torch's stubs lack Module.to's memory_format keyword, which torch documents and takes
        self.model = model.to(device).eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.half:
            self.model = self.model.half()
            torch.backends.cudnn.benchmark = True  # fixed 96×96 shapes: pick the fastest kernels once
        self.network: Network = network if network is not None else self.model
        self.batch_size = batch_size

    @property
    def batch_size(self) -> int:
        """Frames per network call; on a CPU at most :attr:`cpu_batch`."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, requested: int) -> None:
        self._batch_size = requested if self.device.type == "cuda" else min(requested, self.cpu_batch)

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        out = np.empty_like(crops)
        start = 0
        while start < len(crops):
            size = self.batch_size
            stop = min(start + size, len(crops))
            try:
                generated = self._run(_padded(crops[start:stop], size), _padded(mels[start:stop], size))
                out[start:stop] = generated[:stop - start]
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                self.batch_size //= 2
                torch.cuda.empty_cache()
                log.warning("GPU out of memory: batch size lowered to %d", self.batch_size)
                continue
            start = stop
        return out

    def _run(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        dtype = torch.float16 if self.half else torch.float32
        faces = torch.from_numpy(crops).to(self.device, non_blocking=True)
        faces = faces.permute(0, 3, 1, 2).to(dtype).div_(255.0)
        masked = faces.clone()
        masked[:, :, faces.shape[2] // 2:] = 0
        face_input = torch.cat([masked, faces], dim=1).contiguous(memory_format=torch.channels_last)
        mel_input = torch.from_numpy(mels).to(self.device, non_blocking=True).to(dtype).unsqueeze(1)
        pred = self.network(mel_input, face_input)
        pred = pred.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return pred.permute(0, 2, 3, 1).cpu().numpy()


def _padded(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` with zero items appended up to ``size`` (the network's one input shape)."""
    if len(batch) >= size:
        return batch
    return np.concatenate([batch, np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)])
