"""MuseTalk's three networks, built from their official config files and strictly loaded.

The network code is the well-kept libraries the reference itself uses: diffusers'
``UNet2DConditionModel`` and ``AutoencoderKL``, transformers' Whisper encoder and feature
extractor (optional extra ``lipsyncd[musetalk]``). Each network is built on the meta device
(shapes only: no random initialisation thrown away, no second copy of 3.4 GB), checked key by
key and shape by shape against the file, then takes the file's tensors as they are.

Config note: the UNet config says ``attention_head_dim: 8`` but diffusers (like the reference)
reads that value as the *number* of heads for this model family; we pass it through untouched
so the library does exactly what the reference did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .configs import checked_config
from .layout import UNET_CONFIG, VAE_CONFIG, WHISPER_CONFIG, WHISPER_PREPROCESSOR, MuseTalkFiles
from .weights import check_layout, current_vae_names, read_weights, without_model_prefix

Network = Any
"""A diffusers or transformers network: an ``nn.Module`` whose own methods (``encode``, ``sample``,
``conv1``...) the code calls. Typed as Any on purpose: ``nn.Module`` would make each of those a
``Tensor | Module``, and those libraries' classes do not type-check as torch modules (diffusers
imports torch conditionally, transformers wraps ``to``)."""


def _ready(module: Network, state: Mapping[str, torch.Tensor]) -> Network:
    """Take the checked tensors (no copy), in float32, for inference."""
    module.load_state_dict(state, strict=True, assign=True)
    return module.float().eval().requires_grad_(False)


def _built(factory: Any, config: object, config_path: str | Path, network: str) -> Network:
    try:
        with torch.device("meta"):
            return factory(config)
    except (TypeError, ValueError, KeyError) as error:
        raise ModelError(f"The config file {config_path} does not describe MuseTalk's {network} "
                         f"({error}); download it again with `lipsyncd models fetch musetalk`.") from error


def build_unet(config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
               source: str | Path = "unet.pth", config_path: str | Path = "musetalk.json") -> Network:
    """The MuseTalk UNet (diffusers ``UNet2DConditionModel``) with the weights of ``state``."""
    from diffusers import UNet2DConditionModel

    unet = _built(UNet2DConditionModel.from_config, dict(config), config_path, "UNet")
    check_layout(state, unet.state_dict(), source, "UNet")
    return _ready(unet, state)


def build_vae(config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
              source: str | Path = "diffusion_pytorch_model.bin",
              config_path: str | Path = "config.json") -> Network:
    """The Stable Diffusion VAE (diffusers ``AutoencoderKL``); legacy attention names accepted."""
    from diffusers import AutoencoderKL

    vae = _built(AutoencoderKL.from_config, dict(config), config_path, "VAE")
    state = current_vae_names(state)
    check_layout(state, vae.state_dict(), source, "VAE")
    return _ready(vae, state)


def build_whisper_encoder(config: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                          source: str | Path = "pytorch_model.bin",
                          config_path: str | Path = "config.json") -> Network:
    """whisper-tiny's encoder (transformers ``WhisperEncoder``).

    The official file is the whole speech-recognition model; all of it is checked (a file
    from another Whisper size or a damaged one is refused), then only the encoder is kept.
    """
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    whisper_config = WhisperConfig.from_dict(dict(config))
    whisper_config._attn_implementation = "sdpa"  # the reference's (transformers' default) attention
    full = _built(WhisperModel, whisper_config, config_path, "Whisper model")
    state = without_model_prefix(state)
    check_layout(state, full.state_dict(), source, "Whisper model")
    encoder = _built(WhisperEncoder, whisper_config, config_path, "Whisper encoder")
    return _ready(encoder, {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})


def feature_extractor(config: Mapping[str, Any]) -> Any:
    """transformers' ``WhisperFeatureExtractor`` with the preprocessor config's parameters."""
    from transformers import WhisperFeatureExtractor

    params = {k: v for k, v in config.items() if k not in ("feature_extractor_type", "processor_class")}
    return WhisperFeatureExtractor(**params)


@dataclass
class MuseTalkNetworks:
    """Everything MuseTalk runs, on one device."""

    unet: Network
    vae: Network
    whisper: Network
    features: Any
    """The log-mel feature extractor (runs on the CPU)."""

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> MuseTalkNetworks:
        for module in (self.unet, self.vae, self.whisper):
            module.to(device)
        return self


def load_networks(files: MuseTalkFiles, device: str | torch.device = "cpu") -> MuseTalkNetworks:
    """Read, check and load all of MuseTalk from its official files (tens of seconds on CPU)."""
    networks = MuseTalkNetworks(
        unet=build_unet(checked_config(UNET_CONFIG, files.unet_config), read_weights(files.unet_weights),
                        files.unet_weights, files.unet_config),
        vae=build_vae(checked_config(VAE_CONFIG, files.vae_config), read_weights(files.vae_weights),
                      files.vae_weights, files.vae_config),
        whisper=build_whisper_encoder(checked_config(WHISPER_CONFIG, files.whisper_config),
                                      read_weights(files.whisper_weights), files.whisper_weights, files.whisper_config),
        features=feature_extractor(checked_config(WHISPER_PREPROCESSOR, files.whisper_preprocessor)),
    )
    return networks.to(device)
