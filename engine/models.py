"""The model registry: which Wav2Lip files exist, where they live, and how to get them there.

A model is one file in the models directory (``<models_dir>/wav2lip_gan.pth``). It arrives
either by :func:`fetch` (resumable HTTP download) or by :func:`install_file` (copy from a file
the user obtained some other way, for machines without internet). Both write to a temporary
name next to the target, check it, then rename it into place, so a half-written or wrong file
never sits under the name the engine loads.

Checking means the published sha256 where one is known. Where none is known the registry says
so (``checksum: unknown``) instead of pretending, and the file is checked the only honest way
left: it must load as a Wav2Lip checkpoint with every weight present and correctly shaped.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ModelError
from .musetalk import layout as musetalk_layout

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while a download runs."""

CHUNK = 1 << 20
ATTEMPTS_PER_URL = 3
"""A dropped connection is resumed this many times per mirror before trying the next one."""
TIMEOUT_S = 60
_MUSETALK_HF = "https://huggingface.co/TMElyralab/MuseTalk/resolve/main"
_SD_VAE_HF = "https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main"
_WHISPER_HF = "https://huggingface.co/openai/whisper-tiny/resolve/main"


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about one model file."""

    name: str
    filename: str
    urls: tuple[str, ...]
    """Mirrors, tried in order (the authors' original links need a browser, so none is theirs)."""
    sha256: str | None
    """Published sha256 of the official file; None where no trustworthy value was found."""
    about: str
    approx_size: int | None = None
    """About how many bytes the official file has (for display; the checks do not rely on it)."""


REGISTRY: dict[str, ModelSpec] = {
    entry.name: entry for entry in (
        ModelSpec(
            name="wav2lip_gan",
            filename="wav2lip_gan.pth",
            urls=("https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/wav2lip_gan.pth",
                  "https://huggingface.co/Nekochu/Wav2Lip/resolve/main/wav2lip_gan.pth"),
            # The value several independent public projects pin for this file (setup scripts that
            # download it from the first mirror, and its git-LFS object id).
            sha256="ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8",
            about="Wav2Lip trained with a visual-quality discriminator: sharper mouths (the default)",
        ),
        ModelSpec(
            name="wav2lip",
            filename="wav2lip.pth",
            urls=("https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/wav2lip.pth",
                  "https://huggingface.co/Nekochu/Wav2Lip/resolve/main/wav2lip.pth"),
            sha256=None,  # no published checksum found that could be trusted
            about="Wav2Lip without the discriminator: slightly tighter sync, softer mouths",
        ),
        # MuseTalk 1.5: seven files in the reference's download layout (sub-folders of the models
        # folder). No checksum of them could be verified, so each is checked by its layout
        # (engine/musetalk/verify.py); sizes are those of the files' contents, about.
        ModelSpec(
            name="musetalk_unet",
            filename=musetalk_layout.UNET_WEIGHTS,
            urls=(f"{_MUSETALK_HF}/{musetalk_layout.UNET_WEIGHTS}",),
            sha256=None,
            about="MuseTalk 1.5 UNet (TMElyralab/MuseTalk; code MIT, weights: see README)",
            approx_size=3_400_000_000,
        ),
        ModelSpec(
            name="musetalk_unet_config",
            filename=musetalk_layout.UNET_CONFIG,
            urls=(f"{_MUSETALK_HF}/{musetalk_layout.UNET_CONFIG}",),
            sha256=None,
            about="MuseTalk 1.5 UNet architecture (JSON)",
            approx_size=1_000,
        ),
        ModelSpec(
            name="sd_vae",
            filename=musetalk_layout.VAE_WEIGHTS,
            urls=(f"{_SD_VAE_HF}/diffusion_pytorch_model.bin",),
            sha256=None,
            about="Stable Diffusion VAE ft-MSE for MuseTalk (stabilityai/sd-vae-ft-mse, MIT)",
            approx_size=335_000_000,
        ),
        ModelSpec(
            name="sd_vae_config",
            filename=musetalk_layout.VAE_CONFIG,
            urls=(f"{_SD_VAE_HF}/config.json",),
            sha256=None,
            about="Stable Diffusion VAE architecture (JSON)",
            approx_size=547,
        ),
        ModelSpec(
            name="whisper_tiny",
            filename=musetalk_layout.WHISPER_WEIGHTS,
            urls=(f"{_WHISPER_HF}/pytorch_model.bin",),
            sha256=None,
            about="whisper-tiny audio encoder for MuseTalk (openai/whisper-tiny, Apache-2.0)",
            approx_size=151_000_000,
        ),
        ModelSpec(
            name="whisper_tiny_config",
            filename=musetalk_layout.WHISPER_CONFIG,
            urls=(f"{_WHISPER_HF}/config.json",),
            sha256=None,
            about="whisper-tiny architecture (JSON)",
            approx_size=2_000,
        ),
        ModelSpec(
            name="whisper_tiny_preprocessor",
            filename=musetalk_layout.WHISPER_PREPROCESSOR,
            urls=(f"{_WHISPER_HF}/preprocessor_config.json",),
            sha256=None,
            about="whisper-tiny log-mel feature parameters (JSON)",
            approx_size=200_000,
        ),
    )
}

BUNDLES: dict[str, tuple[str, ...]] = {
    "musetalk": ("musetalk_unet", "musetalk_unet_config", "sd_vae", "sd_vae_config",
                 "whisper_tiny", "whisper_tiny_config", "whisper_tiny_preprocessor"),
}
"""Names that stand for several models at once (``lipsyncd models fetch musetalk``)."""


def bundle_members(name: str) -> tuple[str, ...]:
    """The models a name stands for: a bundle's members, or the model itself."""
    return BUNDLES.get(name) or (model_spec(name).name,)


@dataclass(frozen=True)
class ModelStatus:
    """The state of one model file, for ``lipsyncd models list/verify`` and ``doctor``."""

    name: str
    path: Path
    present: bool
    size: int | None
    checksum: str
    """``ok``, ``mismatch``, ``unknown`` (no published checksum), or ``missing``."""
    problem: str | None = None
    """What is wrong, in words; None when the file is present and usable."""

    @property
    def ok(self) -> bool:
        return self.present and self.problem is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "ok": self.ok}


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; ModelError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"There is no model called '{name}'; the models are: "
                         f"{', '.join(REGISTRY)}.") from None


def model_path(models_dir: str | Path, name: str) -> Path:
    """Where the model ``name`` lives (whether or not it is there)."""
    return Path(models_dir) / model_spec(name).filename


def require_model(models_dir: str | Path, name: str) -> Path:
    """The model's path, or ModelError telling the user exactly how to put it there.

    Cheap (no hashing): called for every job; a wrong file is caught by the strict loader.
    """
    path = model_path(models_dir, name)
    if path.is_file() and path.stat().st_size > 0:
        return path
    partial = " A partial download is there already; the command resumes it." \
        if _part_path(path).exists() else ""
    raise ModelError(f"The lip-sync model file {path.name} is missing. Put it at {path.resolve()}, "
                     f"or download it with the command `lipsyncd models fetch {name}`.{partial}")


def list_models(models_dir: str | Path) -> list[ModelStatus]:
    """Every registered model with presence, size and checksum state (hashes present files)."""
    return [_status(models_dir, name, deep=False) for name in REGISTRY]


def verify(models_dir: str | Path, name: str) -> ModelStatus:
    """Check one model thoroughly: its sha256, or, where none is published, its full layout."""
    return _status(models_dir, name, deep=True)


def fetch(models_dir: str | Path, name: str, url: str | None = None,
          progress: ProgressCallback | None = None) -> Path:
    """Download a model into place, resuming a previous partial download, and check it.

    Data goes to ``<file>.part``; a dropped connection resumes from where it stopped (HTTP
    Range), first within this call, else on the next run. A finished file with the wrong
    checksum is deleted and ModelError raised; a right one is renamed into place atomically.
    An already present, valid model is kept and not downloaded again.
    """
    model = model_spec(name)
    if model.filename in musetalk_layout.OFFICIAL_FILES:
        from .musetalk.verify import require_libraries

        require_libraries()  # before a download of up to 3.4 GB that could not be checked
    dest = model_path(models_dir, name)
    if dest.is_file() and verify(models_dir, name).ok:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    failures = []
    for source in (url,) if url else model.urls:
        try:
            _download(source, part, progress)
            break
        except _TransferError as error:
            failures.append(f"{source}: {error}")
    else:
        kept = f" The partial download {part} is kept; run the command again to resume." \
            if part.exists() else ""
        raise ModelError(f"Could not download {model.filename} ({'; '.join(failures)}).{kept}")
    try:
        _check(model, part, "The download was rejected and deleted")
    except ModelError:
        part.unlink(missing_ok=True)
        raise
    _move_into_place(part, dest)
    return dest


def install_file(models_dir: str | Path, name: str, src: str | Path) -> Path:
    """Copy a model file obtained elsewhere into place, after the same check as a download."""
    model = model_spec(name)
    src = Path(src)
    if not src.is_file():
        raise ModelError(f"The file {src} does not exist.")
    _check(model, src, f"{src} was not installed")
    dest = model_path(models_dir, name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".install", dir=dest.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out, src.open("rb") as data:
            shutil.copyfileobj(data, out, CHUNK)
        temp.chmod(0o644)  # mkstemp makes it private; a model file is not a secret
        _move_into_place(temp, dest)
    finally:
        temp.unlink(missing_ok=True)  # only left when the copy failed (disk full...)
    return dest


def file_sha256(path: Path) -> str:
    with path.open("rb") as data:
        return hashlib.file_digest(data, "sha256").hexdigest()


class _TransferError(Exception):
    """A mirror could not deliver the file (network or HTTP error); the next one may."""


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _problem(model: ModelSpec, path: Path, deep: bool) -> tuple[str, str | None]:
    """``(checksum state, problem or None)`` for a file that is meant to be ``model``."""
    if model.sha256 is not None:
        if file_sha256(path) == model.sha256:
            return "ok", None
        return "mismatch", (f"it is not the official {model.filename} (its sha256 differs "
                            f"from the published {model.sha256[:12]}...); it is damaged, "
                            "incomplete, or a different file.")
    if deep:
        try:
            _check_layout(model, path)
        except ModelError as error:
            return "unknown", str(error)
    return "unknown", None


def _check_layout(model: ModelSpec, path: Path) -> None:
    """ModelError unless ``path`` has the layout of ``model``'s official file."""
    # torch and the networks load only when a layout check is due
    if model.filename in musetalk_layout.OFFICIAL_FILES:
        from .musetalk.verify import check_file

        check_file(model.filename, path)
    else:
        from .wav2lip import read_state_dict

        read_state_dict(path)


def _status(models_dir: str | Path, name: str, deep: bool) -> ModelStatus:
    model = model_spec(name)
    path = model_path(models_dir, name)
    if not path.is_file():
        return ModelStatus(name, path, False, None, "missing",
                           f"{model.filename} is missing (lipsyncd models fetch {name}).")
    checksum, problem = _problem(model, path, deep)
    return ModelStatus(name, path, True, path.stat().st_size, checksum, problem)


def _check(model: ModelSpec, path: Path, rejected: str) -> None:
    """ModelError starting with ``rejected`` unless ``path`` passes the deep check."""
    _, problem = _problem(model, path, deep=True)
    if problem is not None:
        raise ModelError(f"{rejected}: {problem}")


def _move_into_place(candidate: Path, dest: Path) -> None:
    """Flush the file, rename it atomically, then fsync the folder: after a power cut the name
    holds either the old file or the complete new one."""
    with candidate.open("rb+") as data:
        os.fsync(data.fileno())
    os.replace(candidate, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _download(url: str, part: Path, progress: ProgressCallback | None) -> None:
    """Fetch ``url`` into ``part``, appending to what is there; retry dropped connections."""
    last: Exception | None = None
    for _ in range(ATTEMPTS_PER_URL):
        try:
            _download_once(url, part, progress)
            return
        except urllib.error.HTTPError as error:
            raise _TransferError(f"HTTP {error.code} {error.reason}") from error
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            last = error  # cut connection, timeout, reset: resume from the bytes we have
    raise _TransferError(f"connection failed {ATTEMPTS_PER_URL} times, last: {last}")


def _download_once(url: str, part: Path, progress: ProgressCallback | None) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "lipsyncd"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                          timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return  # nothing left to send: the part is complete (the checksum will tell)
        raise
    with response:
        if response.status != 206:
            offset = 0  # the server ignored the Range header and sends the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        with part.open("ab" if offset else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        if total is not None and done < total:
            raise http.client.IncompleteRead(b"", total - done)
