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
data ships with the program. That calibration costs ~10 CPU seconds (converting the network
~4, NNCF ~6-9). With a cache folder the converted network is kept per checkpoint and the
quantised one per checkpoint and video, so a new video pays only NNCF, and a repeat avatar (the
common case) reads its network back in milliseconds and compiles it in ~0.4 s.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ModelError
from .wav2lip import Wav2Lip

log = logging.getLogger(__name__)
CACHE_VERSION = 1
"""Bumped when what is kept for a video changes (calibration inputs, NNCF settings)."""

MISSING = ("engine.precision int8 needs OpenVINO and NNCF, which are not installed here: install them with "
           "`pip install 'lipsyncd[int8]'`, or set engine.precision to fp32.")


class Int8Wav2Lip:
    """Callable like the network: ``(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in 0..1,
    with int8 weights and activations, for batches of any size (``batch_size`` below 8 on a CPU
    gives smaller ones; the frame loop pads every call of a render to the same size).

    Quantised on the first call after :meth:`calibrate_next` (and the very first call), on that
    call's faces, unless the cache holds this video's network already; safe to call from several
    threads at once (one OpenVINO request per thread, ``streams`` of one thread each run at once).
    """

    def __init__(self, model: Wav2Lip, streams: int, cache_dir: Path | None = None, model_key: str = "") -> None:
        """``cache_dir``: where quantised networks are kept, named by ``model_key`` (the
        checkpoint's digest) and each video's key (see :meth:`calibrate_next`); None keeps none."""
        _no_telemetry()
        try:
            import nncf
            import openvino  # noqa: F401 - refused here, before any work, when it is missing
        except ImportError as error:
            raise ModelError(MISSING) from error
        nncf.set_log_level(logging.WARNING)
        self._model = model.float().eval()
        self._fp32: Any = None
        self._streams = streams
        self._cache_dir, self._model_key = cache_dir, model_key
        self._video_key: str | None = None
        self._mels: np.ndarray | None = None
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._local = threading.local()

    def calibrate_next(self, video_key: str | None = None, mels: np.ndarray | None = None) -> None:
        """A new video: the next call uses its activation ranges, read from the cache under
        ``video_key`` (e.g. the video's sha256) when they are there, else measured on that call's
        faces with ``mels`` (mel windows, ``(B, 80, 16)``, spread over the speech) or the call's own."""
        with self._lock:
            self._compiled, self._video_key, self._mels = None, video_key, mels

    def __call__(self, mel: torch.Tensor, face: torch.Tensor, first_row: int = 0) -> torch.Tensor:
        """Whole faces, whatever ``first_row`` asks (one quantised network per video)."""
        feed = {"mel": np.ascontiguousarray(mel.numpy()), "face": np.ascontiguousarray(face.numpy())}
        with self._lock:
            if self._compiled is None:
                self._compiled = self._compile(self._cached() or self._quantised(feed))
            compiled = self._compiled
        if getattr(self._local, "compiled", None) is not compiled:
            self._local.compiled, self._local.request = compiled, compiled.create_infer_request()
        result = self._local.request.infer(feed)
        return torch.from_numpy(np.array(result[compiled.output(0)]))  # a copy: the request reuses its buffer

    def _entry(self, name: str | None) -> Path | None:
        """Where the cache keeps this checkpoint's network called ``name`` (a video's key, or
        ``fp32`` for the converted one); None without a cache or a name."""
        if self._cache_dir is None or name is None:
            return None
        return self._cache_dir / f"wav2lip-{self._model_key}-{name}-v{CACHE_VERSION}.xml"

    def _cached(self) -> Any:
        """The quantised network kept for this checkpoint and video, or None."""
        model = _read(self._entry(self._video_key))
        if model is not None:
            log.info("Wav2Lip int8 ranges of this video taken from the cache")
        return model

    def _quantised(self, feed: dict[str, np.ndarray]) -> Any:
        import nncf
        import rich  # NNCF draws its progress bars with rich's shared console, on stdout

        if self._fp32 is None:
            self._fp32 = self._converted()
        if self._mels is not None:
            feed = {"mel": np.ascontiguousarray(self._mels[:, None], np.float32), "face": feed["face"]}
            feed["face"] = np.resize(feed["face"], (len(feed["mel"]), *feed["face"].shape[1:]))
        console = rich.get_console()
        quiet, console.quiet = console.quiet, True  # stdout may be `lipsyncd render --json`'s
        try:
            quantised = nncf.quantize(self._fp32, nncf.Dataset([feed]), subset_size=1)
        finally:
            console.quiet = quiet
        log.info("Wav2Lip quantised to int8 on this video's first %d faces", len(feed["face"]))
        path = self._entry(self._video_key)
        if path is not None:
            _save(quantised, path)
        return quantised

    def _converted(self) -> Any:
        """The network as an OpenVINO fp32 model (any batch size): read from the cache when this
        checkpoint was converted before (milliseconds), else converted (~4 CPU s) and kept."""
        import openvino as ov

        path = self._entry("fp32")
        model = _read(path)
        if model is not None:
            return model
        example = (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
        with torch.inference_mode():
            model = ov.convert_model(self._model, example_input=example,  # -1: any batch size
                                     input=[("mel", [-1, 1, 80, 16]), ("face", [-1, 6, 96, 96])])
        if path is not None:
            _save(model, path)
        return model

    def _compile(self, model: Any) -> Any:
        import openvino as ov

        return ov.Core().compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": self._streams, "NUM_STREAMS": self._streams,  # one thread per stream
            "INFERENCE_PRECISION_HINT": "f32"})  # int8 where quantised, fp32 elsewhere (never bf16)


def _read(path: Path | None) -> Any:
    """The network kept at ``path``, or None when there is none or it cannot be read (a damaged
    entry is made again and replaced)."""
    import openvino as ov

    if path is None or not path.exists():
        return None
    try:
        return ov.Core().read_model(path)
    except RuntimeError as error:
        log.warning("int8 cache entry %s unreadable (%s): making it again", path.name, error)
        return None


def _save(model: Any, path: Path) -> None:
    """Keep a quantised network as ``path`` (.xml) and its .bin, each written under a temporary
    name and renamed, the .xml last, so a reader never sees half an entry. A cache that cannot be
    written costs the next run a calibration, nothing else."""
    import openvino as ov

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, tmp, compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except OSError as error:
        log.warning("int8 cache entry %s not written: %s", path.name, error)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


def _no_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from reporting usage to Google Analytics. Both turn
    their telemetry on without asking when no consent file exists (and write a client id under
    ``~/intel/``); a service on a NAS must send nothing anywhere and write nothing in a home
    folder. Both fall back to a stub when the ``openvino_telemetry`` package cannot be imported,
    so it is made unimportable in this process (a ``None`` in ``sys.modules`` makes ``import``
    fail), before either is imported."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
