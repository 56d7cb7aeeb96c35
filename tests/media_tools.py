"""Small tools shared by the tests and the benchmark: writing speech files, watching memory."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """PCM16 mono WAV with the standard library, independent of the decoder under test."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


class PeakRss:
    """Peak resident memory while the ``with`` block runs, sampled every 20 ms in a thread:
    ``peak`` (MiB) and ``growth`` (MiB above the level at entry)."""

    def __enter__(self) -> "PeakRss":
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def growth(self) -> float:
        return self.peak - self.base
