"""Face crops + audio prompts to new faces: VAE encode, one UNet step, VAE decode.

The reference encodes each crop twice (lower half masked, and whole as the identity reference),
concatenates the two latents (masked first) scaled by Stable Diffusion's 0.18215, runs the UNet
once at timestep 0 with the audio as cross-attention context, and decodes its output as the new
face. The reference *samples* the VAE posterior without a seed, so its output changes from run
to run; we take the posterior mean (what MuseTalk's training code uses), which is deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import with_positions
from .face import vae_input
from .networks import Network

LATENT_SCALE = 0.18215
"""diffusers' default ``scaling_factor`` for this VAE (its config.json does not set one)."""


@torch.inference_mode()
def posterior(vae: Network, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's latent distribution for input images ``x``, before scaling."""
    dist = vae.encode(x).latent_dist
    return dist.mean, dist.std


def unet_input(vae: Network, faces_bgr: np.ndarray) -> torch.Tensor:
    """(B, 8, 32, 32): the scaled posterior means of the masked and the whole faces, masked first."""
    device = next(vae.parameters()).device
    masked, _ = posterior(vae, vae_input(faces_bgr, masked=True).to(device))
    whole, _ = posterior(vae, vae_input(faces_bgr, masked=False).to(device))
    return LATENT_SCALE * torch.cat([masked, whole], dim=1)


@torch.inference_mode()
def unet_step(unet: Network, latents: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """(B, 4, 32, 32): the UNet's single step at timestep 0, audio prompts (without PE) as context."""
    timestep = torch.tensor([0], device=latents.device)
    return unet(latents, timestep, encoder_hidden_states=with_positions(prompts)).sample


@torch.inference_mode()
def decode(vae: Network, latents: torch.Tensor) -> torch.Tensor:
    """(B, 3, 256, 256) RGB images in about [-1, 1], unclamped, from UNet-output latents."""
    return vae.decode(latents / LATENT_SCALE).sample


def to_bgr_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 256, 256, 3) BGR uint8 faces from decoded images, rounded half to even as numpy does."""
    x = (images.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray((x * 255).round().astype(np.uint8)[..., ::-1])
