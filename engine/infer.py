"""Running Wav2Lip on batches of face crops: input layout, precision, and out-of-memory recovery.

Crops travel to the device as uint8 (a quarter of float32's bytes) and are normalised there.
On CUDA the network runs in fp16 with channels-last tensors; when a batch does not fit, the
batch size is halved for the rest of the render instead of failing the job.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .wav2lip import Wav2Lip

log = logging.getLogger(__name__)


class MouthGenerator:
    """Callable: (crops uint8 (B,96,96,3) BGR, mel windows (B,80,16)) → uint8 (B,96,96,3) BGR."""

    def __init__(self, model: Wav2Lip, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.half = device.type == "cuda"
        self.model = model.to(device).eval()
        if self.half:
            # torch's stubs lack Module.to's memory_format keyword, which torch documents and takes
            self.model = self.model.half().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            torch.backends.cudnn.benchmark = True  # fixed 96×96 shapes: pick the fastest kernels once
        self.batch_size = batch_size

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        out = np.empty_like(crops)
        start = 0
        while start < len(crops):
            stop = start + self.batch_size
            try:
                out[start:stop] = self._run(crops[start:stop], mels[start:stop])
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
        face_input = torch.cat([masked, faces], dim=1)
        mel_input = torch.from_numpy(mels).to(self.device, non_blocking=True).to(dtype).unsqueeze(1)
        if self.half:
            face_input = face_input.contiguous(memory_format=torch.channels_last)
        pred = self.model(mel_input, face_input)
        pred = pred.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return pred.permute(0, 2, 3, 1).cpu().numpy()
