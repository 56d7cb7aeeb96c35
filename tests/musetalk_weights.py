"""Deterministic MuseTalk 1.5 weights for tests: the conformance fixture's weight rule.

Trained weights cannot be downloaded here, so the tests use weights defined by a rule (the same
splitmix64 hash of key and index as for Wav2Lip, with MuseTalk's own value mapping) that the
reference implementation was also run with: the goldens in ``tests/fixtures/musetalk`` were
computed from exactly these numbers, loaded from files in the official download layout.

The layout files (``layout_*.json``) say, per tensor, the key as written in the official file,
its shape, and the key the rule is seeded with (its name in the module the reference builds);
they differ for the VAE's legacy attention names and Whisper's ``model.`` prefix, which is what
makes the fixture exercise the loader's renaming.

Generating all three networks takes about a minute and 4 GB of memory (the UNet alone holds
850 million values), so each state dict is built once per test process and shared.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import torch

from lipsyncd.engine.musetalk.networks import MuseTalkNetworks
from weights import _uniform as uniform_rule_values  # the shared splitmix64 hash of the rule

FIXTURES = Path(__file__).parent / "fixtures" / "musetalk"

LAYOUT_FILES = {
    "unet": "layout_unet_musetalkV15_unet.pth.json",
    "vae": "layout_sd-vae_diffusion_pytorch_model.bin.json",
    "whisper": "layout_whisper_pytorch_model.bin.json",
}


def layout(network: str) -> list[tuple[str, tuple[int, ...], str]]:
    """``(key in the official file, shape, rule key)`` of every tensor of ``network``, in file order."""
    entries = json.loads((FIXTURES / LAYOUT_FILES[network]).read_text())
    return [(key, tuple(shape), rule_key) for key, shape, _dtype, rule_key in entries]


def rule_tensor(rule_key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The rule's float32 tensor for one weight, seeded by its name in the reference's module."""
    n = math.prod(shape)
    u = uniform_rule_values(rule_key, n)
    last = rule_key.rsplit(".", 1)[-1]
    if rule_key.endswith(("embed_positions.weight", "embed_tokens.weight")):
        values = 2 * u - 1
    elif last == "bias":
        values = 0.1 * (2 * u - 1)
    elif last == "weight" and len(shape) == 1:
        values = 1 + 0.1 * (2 * u - 1)
    elif last == "weight":
        values = (2 * u - 1) * math.sqrt(3 / math.prod(shape[1:]))
    else:
        raise ValueError(f"the weight rule has no case for {rule_key} {shape}")
    return torch.from_numpy(values.reshape(shape).astype(np.float32))


@functools.cache
def rule_state_dict(network: str) -> dict[str, torch.Tensor]:
    """The state dict of ``network`` ("unet", "vae" or "whisper") exactly as the official file
    holds it (file keys, file order), with the rule's values. Shared: never modify in place."""
    return {key: rule_tensor(rule_key, shape) for key, shape, rule_key in layout(network)}


def checksums(state: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """``{key: (sum, sum of abs)}`` in float64, the form of ``weights_checksums.json``."""
    return {key: (float(t.sum(dtype=torch.float64)), float(t.abs().sum(dtype=torch.float64))) for key, t in state.items()}


def shapes_only(network: str, keys: str = "file") -> dict[str, torch.Tensor]:
    """The official file's layout as meta tensors (shapes, no data): a tiny stand-in for checks
    of keys and shapes. ``keys="rule"`` names them as the network does instead."""
    return {(key if keys == "file" else rule_key): torch.empty(shape, device="meta")
            for key, shape, rule_key in layout(network)}


def write_official_layout(models_dir: Path) -> Path:
    """All seven official files under ``models_dir``, the weights as shapes-only tensors (a few
    hundred KB in all): right for every layout check, but holding no numbers to run."""
    from lipsyncd.engine.musetalk.layout import UNET_WEIGHTS, VAE_WEIGHTS, WHISPER_WEIGHTS

    for config in (FIXTURES / "models").rglob("*.json"):
        target = models_dir / config.relative_to(FIXTURES / "models")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(config.read_bytes())
    for relative, network in ((UNET_WEIGHTS, "unet"), (VAE_WEIGHTS, "vae"), (WHISPER_WEIGHTS, "whisper")):
        torch.save(shapes_only(network), models_dir / relative)
    return models_dir


@functools.cache
def rule_networks() -> MuseTalkNetworks:
    """All of MuseTalk with the rule's weights, on the CPU, built once per test process (the
    UNet's tensors are those of :func:`rule_state_dict`, not a copy)."""
    from lipsyncd.engine.musetalk.configs import read_config
    from lipsyncd.engine.musetalk.layout import UNET_CONFIG, VAE_CONFIG, WHISPER_CONFIG, WHISPER_PREPROCESSOR
    from lipsyncd.engine.musetalk.networks import build_unet, build_vae, build_whisper_encoder, feature_extractor

    def config(relative: str) -> dict:
        return read_config(FIXTURES / "models" / relative)

    return MuseTalkNetworks(
        unet=build_unet(config(UNET_CONFIG), rule_state_dict("unet")),
        vae=build_vae(config(VAE_CONFIG), rule_state_dict("vae")),
        whisper=build_whisper_encoder(config(WHISPER_CONFIG), rule_state_dict("whisper")),
        features=feature_extractor(config(WHISPER_PREPROCESSOR)),
    )
