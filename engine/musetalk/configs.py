"""MuseTalk's config files: reading them, and checking they describe MuseTalk 1.5's architecture.

The networks are built from the config files of the installation, as the reference builds them;
a config from another model (another Whisper size, another VAE) would build a network the
weights do not fit, or worse, one they fit by accident. So each file's architecture fields are
compared with the reference configs shipped with the package (``reference_configs/``, the same
fields and values as the official files).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .layout import UNET_CONFIG, VAE_CONFIG, WHISPER_CONFIG, WHISPER_PREPROCESSOR

REFERENCE_CONFIGS = Path(__file__).parent / "reference_configs"

ARCHITECTURE_FIELDS: dict[str, tuple[str, ...]] = {
    UNET_CONFIG: ("in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
                  "layers_per_block", "attention_head_dim", "cross_attention_dim", "norm_num_groups",
                  "flip_sin_to_cos", "freq_shift"),
    VAE_CONFIG: ("in_channels", "out_channels", "block_out_channels", "down_block_types", "up_block_types",
                 "latent_channels", "layers_per_block", "norm_num_groups"),
    WHISPER_CONFIG: ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "decoder_layers",
                     "decoder_attention_heads", "decoder_ffn_dim", "num_mel_bins", "max_source_positions",
                     "max_target_positions", "vocab_size"),
    WHISPER_PREPROCESSOR: ("feature_size", "sampling_rate", "hop_length", "n_fft", "chunk_length", "n_samples",
                           "nb_max_frames"),
}
"""Per config file, the fields whose value must be the reference's for the networks to be right."""


def read_config(path: str | Path) -> dict[str, Any]:
    """A JSON config file as a dict; ModelError saying which file is wrong otherwise."""
    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"The config file {path} does not exist; it comes with the model files "
                         "(`lipsyncd models fetch musetalk`).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelError(f"The config file {path} is not readable JSON ({error}); download it again "
                         "with `lipsyncd models fetch musetalk`.") from error
    if not isinstance(config, dict):
        raise ModelError(f"The config file {path} does not hold a JSON object; download it again "
                         "with `lipsyncd models fetch musetalk`.")
    return config


@functools.cache
def reference_config(relative: str) -> dict[str, Any]:
    """The reference's config for the official file ``relative`` (shipped with the package)."""
    return json.loads((REFERENCE_CONFIGS / relative).read_text(encoding="utf-8"))


def checked_config(relative: str, path: str | Path) -> dict[str, Any]:
    """The config file ``path`` as a dict, or ModelError unless it is the official ``relative``'s
    architecture (the networks are built from the file, as the reference builds them)."""
    config = read_config(path)
    reference = reference_config(relative)
    for field in ARCHITECTURE_FIELDS[relative]:
        if field not in config:
            raise ModelError(f"The config file {path} lacks the field '{field}', so it is not the official "
                             f"{relative}; download it again with `lipsyncd models fetch musetalk`.")
        if config[field] != reference[field]:
            raise ModelError(f"The config file {path} says {field} = {config[field]!r} where MuseTalk 1.5 needs "
                             f"{reference[field]!r}: it belongs to another model. Download the official {relative} "
                             "with `lipsyncd models fetch musetalk`.")
    return config
