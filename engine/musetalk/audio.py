"""Speech to MuseTalk's per-video-frame audio prompts, as the reference computes them.

1. The 16 kHz speech is cut into 30 s segments; each becomes Whisper's log-mel input
   (transformers' ``WhisperFeatureExtractor``: padded to 30 s, normalised per segment).
2. whisper-tiny's encoder turns a segment into 1500 frames (50 per second) of 5 stacked
   hidden states: the embedding, the inputs of encoder layers 1-3, and the final LayerNorm
   of the last layer's output.
3. Video frame ``f`` takes 10 consecutive whisper frames starting at ``floor(f * 50 / fps)``
   of the sequence padded with 4 zero frames in front (and zeros after the end): whisper frames
   2f-4 .. 2f+5 at 25 fps, i.e. 0.2 s around the frame. They are flattened to 50 rows of 384
   (row = time * 5 + layer) and, just before the UNet, a sinusoidal positional encoding is added.

Segments are encoded when first needed and only the last two are kept, so memory stays flat in
the length of the speech. The reference truncates the frame rate to an integer (29.97 -> 29),
which drifts out of sync on NTSC video; we use the true rate (identical at integer rates).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from .networks import Network

SAMPLE_RATE = 16_000
SEGMENT_SAMPLES = 30 * SAMPLE_RATE
WHISPER_FPS = 50
FRAMES_PER_SEGMENT = 1500
LEFT_PAD_FRAMES = 2  # the v1.5 defaults audio_padding_length_left / _right
RIGHT_PAD_FRAMES = 2
PROMPT_FRAMES = 2 * (LEFT_PAD_FRAMES + RIGHT_PAD_FRAMES + 1)  # 10 whisper frames per video frame
HIDDEN_LAYERS = 5
D_MODEL = 384


def log_mel(features: Any, segment: np.ndarray) -> torch.Tensor:
    """Whisper's (1, 80, 3000) log-mel input for one segment of at most 30 s of float32 speech."""
    return features(segment, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features


@torch.inference_mode()
def stacked_hidden_states(whisper: Network, mel: torch.Tensor) -> torch.Tensor:
    """(B, 1500, 5, 384): the encoder's embedding output, the inputs of its layers 1..n-1, and
    the final LayerNorm of the last layer's output, stacked on dim 2 (as the reference stacks
    ``hidden_states``). Walked here rather than through ``output_hidden_states`` so that the
    meaning of each slot does not depend on the transformers version."""
    x = nn.functional.gelu(whisper.conv1(mel))
    x = nn.functional.gelu(whisper.conv2(x)).permute(0, 2, 1)
    x = x + whisper.embed_positions.weight[: x.shape[1]]
    states = [x]
    for index, layer in enumerate(whisper.layers):
        x = layer(x, None)
        x = x[0] if isinstance(x, tuple) else x
        states.append(whisper.layer_norm(x) if index == len(whisper.layers) - 1 else x)
    return torch.stack(states, dim=2)


def whisper_frame_count(n_samples: int) -> int:
    """How many whisper frames the reference keeps for ``n_samples`` of 16 kHz speech."""
    return math.floor(n_samples / SAMPLE_RATE * WHISPER_FPS)


def prompt_sources(frame: int, fps: float) -> list[int]:
    """The whisper frames (-1 or beyond the end: zero padding) that video frame ``frame`` stacks."""
    padding = math.ceil(WHISPER_FPS / fps) * LEFT_PAD_FRAMES
    start = math.floor(frame * (WHISPER_FPS / fps)) - padding
    return list(range(start, start + PROMPT_FRAMES))


_PE_CACHE: dict[tuple[int, torch.device], torch.Tensor] = {}


def positional_encoding(rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The reference's sinusoidal encoding (d_model 384) for ``rows`` positions, float32."""
    key = (rows, torch.device(device))
    if key not in _PE_CACHE:
        position = torch.arange(rows, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, D_MODEL, 2).float() * (-math.log(10000.0) / D_MODEL))
        pe = torch.zeros(rows, D_MODEL)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        _PE_CACHE[key] = pe.to(device)
    return _PE_CACHE[key]


def with_positions(prompts: torch.Tensor) -> torch.Tensor:
    """(B, 50, 384) prompts + the positional encoding: the UNet's ``encoder_hidden_states``."""
    return prompts + positional_encoding(prompts.shape[1], prompts.device).to(prompts.dtype)


class SpeechPrompts:
    """The audio prompts of one speech, computed segment by segment as frames ask for them.

    Computed once per job and shared by all its videos (the prompts depend only on the audio
    and the frame rate, passed per call).
    """

    KEPT_SEGMENTS = 2

    def __init__(self, wav: np.ndarray, whisper: Network, features: Any) -> None:
        self.wav = np.asarray(wav, dtype=np.float32)
        self.whisper = whisper
        self.features = features
        self.length = whisper_frame_count(len(self.wav))
        self._segments: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # the frame loop's network workers ask at once

    def frame_count(self, fps: float) -> int:
        """Video frames the reference makes for this speech at ``fps``."""
        return math.floor(len(self.wav) / SAMPLE_RATE * fps)

    def _segment(self, index: int) -> torch.Tensor:
        """(1500, 5, 384) hidden states of 30 s segment ``index``."""
        if index not in self._segments:
            device = next(self.whisper.parameters()).device
            chunk = self.wav[index * SEGMENT_SAMPLES:(index + 1) * SEGMENT_SAMPLES]
            mel = log_mel(self.features, chunk).to(device)
            self._segments[index] = stacked_hidden_states(self.whisper, mel)[0]
            while len(self._segments) > self.KEPT_SEGMENTS:
                self._segments.popitem(last=False)
        self._segments.move_to_end(index)
        return self._segments[index]

    def prompts(self, frames: list[int], fps: float) -> torch.Tensor:
        """(len(frames), 50, 384) audio prompts of the given video frames, without the PE."""
        with self._lock:
            return self._prompts(frames, fps)

    def _prompts(self, frames: list[int], fps: float) -> torch.Tensor:
        wanted = [s for frame in frames for s in prompt_sources(frame, fps) if 0 <= s < self.length]
        first = min(wanted, default=0)
        last = max(wanted, default=0)
        segments = range(first // FRAMES_PER_SEGMENT, last // FRAMES_PER_SEGMENT + 1)
        rows = torch.cat([self._segment(i) for i in segments])[first - segments[0] * FRAMES_PER_SEGMENT:]
        return gather_prompts(rows, first, self.length, frames, fps)


def gather_prompts(rows: torch.Tensor, first: int, length: int, frames: list[int], fps: float) -> torch.Tensor:
    """(len(frames), 50, 384) prompts from stacked hidden states ``rows`` (R, 5, 384), which hold
    whisper frames ``first, first + 1, ...``; frames outside ``0 .. length-1`` are zeros."""
    padded = torch.cat([rows.new_zeros(1, *rows.shape[1:]), rows])  # row 0: the zero frame
    index = [[source - first + 1 if 0 <= source < length else 0 for source in prompt_sources(frame, fps)]
             for frame in frames]
    windows = padded[torch.tensor(index, dtype=torch.long, device=rows.device)]
    return windows.reshape(len(frames), PROMPT_FRAMES * HIDDEN_LAYERS, D_MODEL)
