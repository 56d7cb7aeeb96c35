"""The Wav2Lip generator network and its strict checkpoint loader.

The layer layout follows the public reference (``models/wav2lip.py``) exactly, down to the
``state_dict`` key names, so the official ``wav2lip_gan.pth`` / ``wav2lip.pth`` files load as
they are. The layers are written as tables of specs rather than one line per layer: the tables
are the architecture, and a wrong number in them shows up in the layout test.

The loader is strict on purpose: a checkpoint that loads "mostly" would render plausible-looking
but wrong mouths, so any missing, unexpected or mis-shaped key is an error naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .errors import ModelError

_FIX_HINT = (
    "It should be one of the official Wav2Lip checkpoints, wav2lip_gan.pth or wav2lip.pth "
    "(`lipsyncd models fetch wav2lip_gan` downloads one)."
)


class Spec(NamedTuple):
    """One conv + batch-norm + ReLU layer: channels in/out, kernel, stride, padding."""

    cin: int
    cout: int
    kernel: int
    stride: int | tuple[int, int]
    padding: int
    residual: bool = False
    transpose: bool = False


def _res(channels: int, count: int) -> list[Spec]:
    """``count`` shape-preserving 3x3 layers that add their input back (residual)."""
    return [Spec(channels, channels, 3, 1, 1, residual=True)] * count


def _up(cin: int, cout: int, stride: int = 2, padding: int = 1) -> Spec:
    """A transposed conv that doubles the spatial size (or grows 1x1 to 3x3 with stride 1)."""
    return Spec(cin, cout, 3, stride, padding, transpose=True)


# Face encoder: 96x96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1; every stage's output is kept as a skip.
FACE_ENCODER: list[list[Spec]] = [
    [Spec(6, 16, 7, 1, 3)],
    [Spec(16, 32, 3, 2, 1), *_res(32, 2)],
    [Spec(32, 64, 3, 2, 1), *_res(64, 3)],
    [Spec(64, 128, 3, 2, 1), *_res(128, 2)],
    [Spec(128, 256, 3, 2, 1), *_res(256, 2)],
    [Spec(256, 512, 3, 2, 1), *_res(512, 1)],
    [Spec(512, 512, 3, 1, 0), Spec(512, 512, 1, 1, 0)],
]

# Audio encoder: mel 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1 embedding of 512 channels.
AUDIO_ENCODER: list[Spec] = [
    Spec(1, 32, 3, 1, 1), *_res(32, 2),
    Spec(32, 64, 3, (3, 1), 1), *_res(64, 2),
    Spec(64, 128, 3, 3, 1), *_res(128, 2),
    Spec(128, 256, 3, (3, 2), 1), *_res(256, 1),
    Spec(256, 512, 3, 1, 0), Spec(512, 512, 1, 1, 0),
]

# Face decoder: each stage's input is the previous output concatenated with the matching skip,
# hence the odd input widths (e.g. 768 = 512 decoded + 256 skipped).
FACE_DECODER: list[list[Spec]] = [
    [Spec(512, 512, 1, 1, 0)],
    [_up(1024, 512, stride=1, padding=0), *_res(512, 1)],
    [_up(1024, 512), *_res(512, 2)],
    [_up(768, 384), *_res(384, 2)],
    [_up(512, 256), *_res(256, 2)],
    [_up(320, 128), *_res(128, 2)],
    [_up(160, 64), *_res(64, 2)],
]


class ConvBlock(nn.Module):
    """Conv (or transposed conv) + batch norm + ReLU, adding the input first when residual.

    Attribute names (``conv_block`` holding conv then norm) match the reference's ``Conv2d`` and
    ``Conv2dTranspose`` classes, which fixes the checkpoint keys.
    """

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        if spec.transpose:
            if not isinstance(spec.stride, int):
                raise ValueError(f"a transposed layer takes one stride for both sides, not {spec.stride}")
            # output_padding = stride - 1 makes a stride-2 layer exactly double the size.
            conv: nn.Module = nn.ConvTranspose2d(spec.cin, spec.cout, spec.kernel, spec.stride,
                                                 spec.padding, output_padding=spec.stride - 1)
        else:
            conv = nn.Conv2d(spec.cin, spec.cout, spec.kernel, spec.stride, spec.padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(spec.cout))
        self.act = nn.ReLU()
        self.residual = spec.residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _stack(specs: list[Spec]) -> nn.Sequential:
    return nn.Sequential(*(ConvBlock(s) for s in specs))


class Wav2Lip(nn.Module):
    """The generator: ``(mel (B,1,80,16), face (B,6,96,96)) -> face (B,3,96,96)`` in 0..1, BGR.

    Works in eval mode under ``torch.inference_mode()``, in fp16 (``.half()``) and with
    ``channels_last`` inputs/weights, which is how the GPU path runs it.
    """

    def __init__(self) -> None:
        super().__init__()
        # Registration order fixes the state_dict order; it is the reference's.
        self.face_encoder_blocks = nn.ModuleList(_stack(stage) for stage in FACE_ENCODER)
        self.audio_encoder = _stack(AUDIO_ENCODER)
        self.face_decoder_blocks = nn.ModuleList(_stack(stage) for stage in FACE_DECODER)
        self.output_block = nn.Sequential(
            ConvBlock(Spec(80, 32, 3, 1, 1)), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor, first_row: int = 0) -> torch.Tensor:
        """The new faces' rows from ``first_row`` down: ``(B, 3, 96 - first_row, 96)``.

        With ``first_row`` > 0 the decoder computes each stage only from the row its share of the
        requested rows needs (:func:`decoder_starts`), the same numbers as the whole face's rows
        there, within float rounding: the paste reads only the lower face (:meth:`.blend.MouthMask.first_face_row`),
        and the decoder's last stages, which draw the most rows, are most of the network's work.
        """
        x = self.audio_encoder(mel)
        skips = []
        y = face
        for block in self.face_encoder_blocks:
            y = block(y)
            skips.append(y)
        for block, start in zip(self.face_decoder_blocks, decoder_starts(first_row), strict=True):
            skip = skips.pop()
            if start:  # x holds the bottom rows of a level half the skip's height; keep those from `start`
                x = x[:, :, x.shape[2] - (skip.shape[2] // 2 - start):]
            x = block(x)
            x = torch.cat((x, skip[:, :, skip.shape[2] - x.shape[2]:]), dim=1)
        out: torch.Tensor = self.output_block(x)
        return out[:, :, out.shape[2] - (face.shape[2] - first_row):]


def decoder_starts(first_row: int) -> list[int]:
    """Per decoder stage, the first row of its input that must be computed so that the network's
    output is exact from ``first_row`` (of 96) down; 0 where a stage needs every row.

    Walked back from the output: a 3×3 layer's row r reads its input's rows from r - 1, so every
    such layer after a stage's first one (and the output block's) moves the need one row up; a
    stride-2 transposed layer's row r reads its input's rows from r // 2, and from a slice that
    starts there its rows are exact from the slice's start (none comes from a row above it).
    """
    starts = [0] * len(FACE_DECODER)
    need = first_row - 1  # the output block's 3×3 layer
    for stage in range(len(FACE_DECODER) - 1, -1, -1):
        first, *rest = FACE_DECODER[stage]
        if need <= 0 or not (first.transpose and first.stride == 2):
            break
        starts[stage] = need = max(0, (need - len(rest)) // 2)
    return starts


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and return its weights, checked against :class:`Wav2Lip`'s layout.

    Accepts the official format (weights under ``"state_dict"``, keys prefixed ``module.`` by
    DataParallel) and a bare state dict. ``weights_only=True`` because a model file may come
    from anywhere and must not be able to run code when unpickled.
    Raises :class:`ModelError` naming the file and the first offending key.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"The model file {path} does not exist. {_FIX_HINT}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, EOF, Runtime) for bad files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelError(f"The model file {path} is not a readable PyTorch checkpoint (it may be "
                         f"truncated or corrupt: {reason}). {_FIX_HINT}") from error
    state = _unwrap(checkpoint, path)
    with torch.device("meta"):  # shapes only: no memory, no random init
        expected = Wav2Lip().state_dict()
    _check_layout(state, expected, path)
    return state


def load_wav2lip(path: str | Path, device: str | torch.device = "cpu", half: bool = False) -> Wav2Lip:
    """Load a checkpoint into a ready-to-run model: eval mode, no gradients, on ``device``.

    The model is built on the meta device and takes the loaded tensors as they are
    (``assign=True``), so no time is spent on a random initialisation that is thrown away.
    """
    state = read_state_dict(path)
    with torch.device("meta"):
        model = Wav2Lip()
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    model = model.half() if half else model.float()
    return model.to(device)


def _unwrap(checkpoint: Any, path: Path) -> dict[str, torch.Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"The model file {path} is a PyTorch file but holds no model weights. {_FIX_HINT}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _check_layout(state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], path: Path) -> None:
    wrong = f"The model file {path} does not match the Wav2Lip network:"
    missing = [k for k in expected if k not in state]
    if missing:
        raise ModelError(f"{wrong} the entry '{missing[0]}' is missing"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}. {_FIX_HINT}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise ModelError(f"{wrong} it has an unexpected entry '{unexpected[0]}'"
                         f"{f' (and {len(unexpected) - 1} more)' if len(unexpected) > 1 else ''}. {_FIX_HINT}")
    for key, want in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ModelError(f"{wrong} the entry '{key}' has shape {shape}, expected "
                             f"{tuple(want.shape)}. {_FIX_HINT}")
