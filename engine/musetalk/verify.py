"""Layout checks of MuseTalk's official files, for ``lipsyncd models verify/fetch/install``.

No trustworthy published checksum was found for these files, so each is checked the honest way
left: a config must describe the architecture MuseTalk 1.5 was trained with (see
:mod:`.configs`), and a weights file must load strictly into that architecture (every key,
every shape). Weight files are memory-mapped, so checking the 3.4 GB UNet reads little more
than its index.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .configs import ARCHITECTURE_FIELDS, checked_config, reference_config
from .layout import (
    UNET_CONFIG,
    UNET_WEIGHTS,
    VAE_CONFIG,
    VAE_WEIGHTS,
    WHISPER_CONFIG,
    WHISPER_PREPROCESSOR,
    WHISPER_WEIGHTS,
)
from .networks import build_unet, build_vae, build_whisper_encoder, feature_extractor
from .weights import read_weights

_CONFIG_OF_WEIGHTS = {UNET_WEIGHTS: UNET_CONFIG, VAE_WEIGHTS: VAE_CONFIG, WHISPER_WEIGHTS: WHISPER_CONFIG}
_BUILDERS = {UNET_WEIGHTS: build_unet, VAE_WEIGHTS: build_vae, WHISPER_WEIGHTS: build_whisper_encoder}


def check_file(relative: str, path: str | Path) -> None:
    """ModelError unless ``path`` is a usable copy of the official file ``relative``."""
    require_libraries()
    if relative in ARCHITECTURE_FIELDS:
        config = checked_config(relative, Path(path))
        if relative == WHISPER_PREPROCESSOR:
            feature_extractor(config)
    elif relative in _BUILDERS:
        config = reference_config(_CONFIG_OF_WEIGHTS[relative])
        _BUILDERS[relative](config, read_weights(path), path)
    else:
        raise ValueError(f"{relative} is not one of MuseTalk's official files")


def require_libraries() -> None:
    """ModelError telling how to install MuseTalk's libraries when they are absent."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise ModelError("MuseTalk needs the libraries diffusers and transformers, which are not installed. "
                         "Install them with `pip install 'lipsyncd[musetalk]'` in lipsyncd's environment.") from error
