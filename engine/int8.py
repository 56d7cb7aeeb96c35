"""Wav2Lip in int8 on a CPU, through OpenVINO: the opt-in ``precision: int8``.

Why: the network is most of a CPU render's time, and x86 CPUs with VNNI (int8 dot products; most
Xeons since 2019, Core since Ice Lake) run int8 convolutions several times faster than fp32.
Measured on the generator alone (``benchmarks/network_levers.py``, interleaved, 2-core Xeon with
AVX-512 VNNI): OpenVINO int8 ran 4.6-5.1× the frames per CPU second of our fp32 torch path, ahead
of torch's own int8 (FX 2.9×, PT2E + inductor 1.0-1.1×) and ONNX Runtime int8 (1.9-2.1×); whole
renders in a running service took 1.85-1.9× fewer CPU seconds.

Why opt-in: int8 changes the picture. On the conformance rule's weights the generated mouth stays
~54 dB PSNR from fp32 (2 levels apart at most), but no trained weights are available here to
measure what it does to real mouths; fp32 stays the default and the conformance reference.

Static int8 needs the range of every layer's activations. They are measured on the first batch
of faces of each video (its own faces, with mel windows spread over the whole speech, so a quiet
first second does not set the audio ranges), so a job always gives the same picture and no face
data ships with the program. That calibration costs ~8-9 CPU seconds of NNCF (converting the
network first, ~3, happens once per checkpoint). With a cache folder the converted network is kept per checkpoint
(:mod:`.openvino_cpu`) and the quantised one per checkpoint and video, so a new video pays only
NNCF, and a repeat avatar (the common case) reads its network back in milliseconds and compiles
it in ~0.4 s. It draws whole faces (one quantised network per video, not one per first row).
A video's int8 network takes 36 MB, so the cache keeps those of the :data:`KEPT_VIDEOS` most
recently rendered videos and drops older ones (which calibrate again when they come back).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelError
from .openvino_cpu import Compiled, ConvertedWav2Lip, Source, feed_of, no_telemetry, read, save

log = logging.getLogger(__name__)

KEPT_VIDEOS = 32
"""Videos whose int8 network the cache keeps (~1.2 GB): the most recently rendered ones."""

MISSING = ("engine.precision int8 needs OpenVINO and NNCF, which are not installed here: install them with "
           "`pip install 'lipsyncd[int8]'`, or set engine.precision to fp32.")


class Int8Wav2Lip:
    """Callable like the network: ``(mel (B,1,80,16), face (B,6,96,96), first_row) -> (B,3,96,96)``
    in 0..1 (whole faces whatever the first row), with int8 weights and activations, for batches
    of any size (``batch_size`` below 8 on a CPU gives smaller ones; the frame loop pads every call
    of a render to the same size).

    Quantised on the first call after :meth:`calibrate_next` (and the very first call), on that
    call's faces, unless the cache holds this video's network already; safe to call from several
    threads at once (one OpenVINO request per thread, ``streams`` of ``threads`` threads each run at once).
    """

    def __init__(self, source: Source, streams: int, cache_dir: Path | None = None, model_key: str = "",
                 threads: int = 1) -> None:
        """``source``: the network or its loader (:class:`.openvino_cpu.ConvertedWav2Lip`);
        ``cache_dir``: where converted and quantised networks are kept, named by ``model_key``
        (the checkpoint's digest) and each video's key (see :meth:`calibrate_next`); None keeps none."""
        no_telemetry()
        try:
            import nncf
            import openvino  # noqa: F401 - refused here, before any work, when it is missing
        except ImportError as error:
            raise ModelError(MISSING) from error
        nncf.set_log_level(logging.WARNING)
        self._converted = ConvertedWav2Lip(source, cache_dir, model_key)
        self._fp32: Any = None
        self._streams, self._threads = streams, threads
        self._video_key: str | None = None
        self._mels: np.ndarray | None = None
        self._lock = threading.Lock()
        self._compiled: Compiled | None = None

    def calibrate_next(self, video_key: str | None = None, mels: np.ndarray | None = None) -> None:
        """A new video: the next call uses its activation ranges, read from the cache under
        ``video_key`` (e.g. the video's sha256) when they are there, else measured on that call's
        faces with ``mels`` (mel windows, ``(B, 80, 16)``, spread over the speech) or the call's own."""
        with self._lock:
            self._compiled, self._video_key, self._mels = None, video_key, mels

    def __call__(self, mel: torch.Tensor, face: torch.Tensor, first_row: int = 0) -> torch.Tensor:
        feed = feed_of(mel, face)
        with self._lock:
            if self._compiled is None:
                self._compiled = Compiled(self._cached() or self._quantised(feed), self._streams, self._threads)
            compiled = self._compiled
        return compiled(feed)

    def _entry(self) -> Path | None:
        """Where the cache keeps this checkpoint's int8 network for the video; None without a key."""
        return self._converted.entry(f"{self._video_key}-int8") if self._video_key is not None else None

    def _cached(self) -> Any:
        """The quantised network kept for this checkpoint and video, or None."""
        path = self._entry()
        model = read(path)
        if model is not None and path is not None:
            log.info("Wav2Lip int8 ranges of this video taken from the cache")
            _touch(path)
        return model

    def _quantised(self, feed: dict[str, np.ndarray]) -> Any:
        import nncf
        import rich  # NNCF draws its progress bars with rich's shared console, on stdout

        if self._fp32 is None:
            self._fp32 = self._converted(0)
        if self._mels is not None:
            feed = {"mel": np.ascontiguousarray(self._mels[:, None], np.float32), "face": feed["face"]}
            feed["face"] = np.resize(feed["face"], (len(feed["mel"]), *feed["face"].shape[1:]))
        console = rich.get_console()
        quiet, console.quiet = console.quiet, True  # stdout may be `lipsyncd render --json`'s
        try:
            # Without bias correction: on one batch of faces it took 1.5× the CPU time and gave
            # no better mouths (rule weights, the fixture's real crops: 54.1 dB with, 54.7 without).
            quantised = nncf.quantize(self._fp32, nncf.Dataset([feed]), subset_size=1, advanced_parameters=
                                      nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
        finally:
            console.quiet = quiet
        log.info("Wav2Lip quantised to int8 on this video's first %d faces", len(feed["face"]))
        path = self._entry()
        if path is not None:
            save(quantised, path)
            drop_least_recent(path.parent, KEPT_VIDEOS)
        return quantised


def _touch(path: Path) -> None:
    """Mark a kept network as just used (its modification time orders the cache)."""
    try:
        os.utime(path)
    except OSError:
        pass  # read-only or just dropped by another worker: it is only an ordering hint


def drop_least_recent(folder: Path, keep: int) -> None:
    """Remove all but the ``keep`` most recently used int8 networks in ``folder`` (the converted
    fp32 ones stay: one per checkpoint and first row). Another worker may drop the same ones at
    once; a network being read as it goes is made again by that reader."""
    entries = sorted(folder.glob("*-int8-v*.xml"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0,
                     reverse=True)
    for path in entries[keep:]:
        path.unlink(missing_ok=True)
        path.with_suffix(".bin").unlink(missing_ok=True)
