"""MuseTalk as the frame loop's face generator: 256x256 crops + video frame numbers in, faces out.

It is the Wav2Lip generator's counterpart and reuses its batching: a batch that does not fit on
the GPU halves the batch size for the rest of the render instead of failing the job. The speech
is analysed once per job (:class:`~.audio.SpeechPrompts`, shared by every video of the job) and
each batch asks it for the prompts of its own video frames.

On CUDA the networks run under fp16 autocast (the reference's ``--use_float16`` runs them in
fp16 too); on the CPU in fp32, which is slow: seconds per frame (README, "Choosing a model").
"""

from __future__ import annotations

import numpy as np
import torch

from ..infer import MouthGenerator
from .audio import SpeechPrompts
from .face import Box, box_from_landmarks, crop_face, mesh_to_68, with_margin
from .generate import decode, to_bgr_uint8, unet_input, unet_step
from .networks import MuseTalkNetworks


def face_box(mesh: np.ndarray, frame_height: int) -> Box:
    """The reference's v1.5 face box (with the chin margin) from a 468-point face mesh in pixels."""
    return with_margin(box_from_landmarks(mesh_to_68(mesh)), frame_height)


def face_crop(frame_bgr: np.ndarray, mesh: np.ndarray) -> tuple[np.ndarray, Box]:
    """The 256x256 BGR crop MuseTalk sees, and its box, from a frame and the face's mesh."""
    box = face_box(mesh, frame_bgr.shape[0])
    return crop_face(frame_bgr, box), box


class MuseTalkGenerator(MouthGenerator):
    """Callable: (crops uint8 (B,256,256,3) BGR, video frame numbers (B,)) -> uint8 (B,256,256,3) BGR.

    Frame numbers are positions in the *output* video (= audio time ``n / fps``), which picks
    each frame's 0.2 s of speech.
    """

    cpu_batch = 1
    """Seconds of work per face on a CPU: batching gains nothing there, and a batch of one keeps
    stop requests and progress within one face's time (calls are padded to the batch size)."""

    def __init__(self, networks: MuseTalkNetworks, speech: SpeechPrompts, fps: float,
                 device: torch.device, batch_size: int) -> None:
        self.device = device
        self.half = device.type == "cuda"
        self.networks = networks.to(device)
        self.speech = speech
        self.fps = fps
        self.batch_size = batch_size

    def _run(self, crops: np.ndarray, frames: np.ndarray, first_row: int) -> np.ndarray:
        """Whole faces (``first_row`` is always 0: no first rows are passed to a MuseTalk render)."""
        networks = self.networks
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            latents = unet_input(networks.vae, crops)
            prompts = self.speech.prompts([int(f) for f in frames], self.fps).to(self.device)
            faces = decode(networks.vae, unet_step(networks.unet, latents, prompts))
        return to_bgr_uint8(faces)
