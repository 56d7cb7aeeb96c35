"""A job's decoded speech and mel, written once so every worker process can use them.

The service decodes the audio and computes the mel spectrogram once per job; worker processes
(and Ray tasks on other hosts) load this file instead of decoding again. It is plain ``.npz``
(numpy arrays, no pickle), so nothing in it can run code when a worker opens it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lipsyncd.engine.audio import SpeechAudio


def save(audio: SpeechAudio, path: Path) -> Path:
    """Write ``audio`` to ``path`` (a ``.npz``) atomically; returns ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, path=np.array(str(audio.path)), samples=audio.samples, mel=audio.mel)
    tmp.replace(path)
    return path


def load(path: Path, audio_path: str | None = None) -> SpeechAudio:
    """Read what :func:`save` wrote; ``audio_path`` replaces the recorded audio file's path
    (a worker on another host sees the shared folder under another mount point)."""
    with np.load(path, allow_pickle=False) as data:
        return SpeechAudio(path=audio_path or str(data["path"]), samples=data["samples"], mel=data["mel"])
