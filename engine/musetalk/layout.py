"""The official MuseTalk 1.5 download layout: which file goes where under the models folder.

The reference's ``download_weights.sh`` puts seven files (v1.5 part) in three sub-folders of
``models/``; we use the same relative paths under our models folder, so a folder copied from a
working MuseTalk installation works as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

UNET_WEIGHTS = "musetalkV15/unet.pth"
UNET_CONFIG = "musetalkV15/musetalk.json"
VAE_WEIGHTS = "sd-vae/diffusion_pytorch_model.bin"
VAE_CONFIG = "sd-vae/config.json"
WHISPER_WEIGHTS = "whisper/pytorch_model.bin"
WHISPER_CONFIG = "whisper/config.json"
WHISPER_PREPROCESSOR = "whisper/preprocessor_config.json"

OFFICIAL_FILES = (UNET_WEIGHTS, UNET_CONFIG, VAE_WEIGHTS, VAE_CONFIG,
                  WHISPER_WEIGHTS, WHISPER_CONFIG, WHISPER_PREPROCESSOR)


@dataclass(frozen=True)
class MuseTalkFiles:
    """The seven files of one MuseTalk installation, as absolute paths."""

    unet_weights: Path
    unet_config: Path
    vae_weights: Path
    vae_config: Path
    whisper_weights: Path
    whisper_config: Path
    whisper_preprocessor: Path

    @classmethod
    def under(cls, models_dir: str | Path) -> MuseTalkFiles:
        """The files' places under ``models_dir`` (whether or not they are there)."""
        root = Path(models_dir)
        return cls(*(root / relative for relative in OFFICIAL_FILES))


def missing_files(models_dir: str | Path) -> list[str]:
    """The official relative paths that are absent (or empty) under ``models_dir``."""
    root = Path(models_dir)
    return [rel for rel in OFFICIAL_FILES
            if not ((root / rel).is_file() and (root / rel).stat().st_size > 0)]


def require_files(models_dir: str | Path) -> MuseTalkFiles:
    """The installation's paths, or ModelError saying which file goes where and how to get it.

    Cheap (no reading): called before every MuseTalk job; bad contents are caught by the
    strict loader.
    """
    missing = missing_files(models_dir)
    if missing:
        root = Path(models_dir).resolve()
        places = "; ".join(f"{rel} at {root / rel}" for rel in missing)
        raise ModelError(
            f"MuseTalk is not fully installed: {len(missing)} of its {len(OFFICIAL_FILES)} files "
            f"{'is' if len(missing) == 1 else 'are'} missing. Put {places}. "
            "Download them with `lipsyncd models fetch musetalk`, or copy each file obtained "
            "elsewhere with `lipsyncd models install NAME FILE` (`lipsyncd models list` shows the names).")
    return MuseTalkFiles.under(models_dir)
