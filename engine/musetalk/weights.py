"""Safe, strict reading of MuseTalk's weight files.

Safe: a model file may come from anywhere, so it is read either as safetensors or with
``torch.load(weights_only=True)``, which refuses pickles that would run code. Zip-format files
are memory-mapped, so the 3.4 GB UNet is not held twice while it is loaded.

Strict: every tensor the network needs must be there with its exact shape, and nothing else may
be; the error names the file and the first offending key. Two spellings are accepted because the
official files use them: the Stable Diffusion VAE's mid-block attention under its older names
(``query``/``key``/``value``/``proj_attn``, as diffusers wrote them in 2022), and Whisper keys
with the ``model.`` prefix of ``WhisperForConditionalGeneration`` checkpoints.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import ModelError

_LEGACY_VAE_ATTENTION = re.compile(r"^(.*\.mid_block\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$")
_CURRENT_NAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_FIX_HINT = ("Download it again (`lipsyncd models fetch musetalk`) or copy the official file in place "
             "(`lipsyncd models install`).")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, keyed as in the file; ModelError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"The model file {path} does not exist. {_FIX_HINT}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # pickle, zip, EOF and runtime errors all mean "not a usable file"
        text = str(error).strip()
        cause = text.splitlines()[0][:200] if text else type(error).__name__
        raise ModelError(f"The model file {path} is not a readable weights file (it may be truncated, "
                         f"corrupt, or contain code, which is refused: {cause}). {_FIX_HINT}") from error
    if not isinstance(state, Mapping) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"The model file {path} holds something other than a plain set of named "
                         f"weights. {_FIX_HINT}")
    return dict(state)


def current_vae_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE state with legacy mid-block attention names changed to today's diffusers names."""
    renamed = {}
    for key, tensor in state.items():
        match = _LEGACY_VAE_ATTENTION.match(key)
        if match:
            key = f"{match[1]}{_CURRENT_NAME[match[2]]}.{match[3]}"
        renamed[key] = tensor
    return renamed


def without_model_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whisper keys as ``WhisperModel`` names them (``model.`` dropped where present)."""
    return {key.removeprefix("model."): tensor for key, tensor in state.items()}


def check_layout(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                 path: str | Path, network: str) -> None:
    """ModelError unless ``state`` has exactly the keys and shapes of ``expected``."""
    wrong = f"The model file {path} does not fit MuseTalk's {network}:"

    def first(keys: list[str]) -> str:
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        return f"'{keys[0]}'{more}"

    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{wrong} the entry {first(missing)} is missing. {_FIX_HINT}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelError(f"{wrong} it has an unexpected entry {first(unexpected)}. {_FIX_HINT}")
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape:
            raise ModelError(f"{wrong} the entry '{key}' has shape {tuple(got.shape)}, expected "
                             f"{tuple(want.shape)}. {_FIX_HINT}")
        if not got.is_floating_point():
            raise ModelError(f"{wrong} the entry '{key}' holds {got.dtype} values, not weights. {_FIX_HINT}")
