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
of faces of each video (its own faces and speech), so a job always gives the same picture and
no face data ships with the program; that calibration costs ~10 CPU seconds per video, paid
back after about 200 frames (README, "CPU levers").
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import numpy as np
import torch

from .errors import ModelError
from .wav2lip import Wav2Lip

log = logging.getLogger(__name__)

MISSING = ("engine.precision int8 needs OpenVINO and NNCF, which are not installed here: install them with "
           "`pip install 'lipsyncd[int8]'`, or set engine.precision to fp32.")


class Int8Wav2Lip:
    """Callable like the network: ``(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96)`` in 0..1,
    with int8 weights and activations, for batches of any size (``batch_size`` below 8 on a CPU
    gives smaller ones; the frame loop pads every call of a render to the same size).

    Quantised on the first call after :meth:`calibrate_next` (and the very first call), on that
    call's inputs; safe to call from several threads at once (one OpenVINO request per thread,
    ``streams`` of one thread each run at once).
    """

    def __init__(self, model: Wav2Lip, streams: int) -> None:
        _no_telemetry()
        try:
            import nncf
            import openvino as ov
        except ImportError as error:
            raise ModelError(MISSING) from error
        nncf.set_log_level(logging.WARNING)
        example = (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
        with torch.inference_mode():
            self._fp32 = ov.convert_model(model.float().eval(), example_input=example,  # -1: any batch size
                                          input=[("mel", [-1, 1, 80, 16]), ("face", [-1, 6, 96, 96])])
        self._streams = streams
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._local = threading.local()

    def calibrate_next(self) -> None:
        """Forget the activation ranges: the next call measures them again (a new video)."""
        with self._lock:
            self._compiled = None

    def __call__(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        feed = {"mel": np.ascontiguousarray(mel.numpy()), "face": np.ascontiguousarray(face.numpy())}
        with self._lock:
            if self._compiled is None:
                self._compiled = self._quantised(feed)
            compiled = self._compiled
        if getattr(self._local, "compiled", None) is not compiled:
            self._local.compiled, self._local.request = compiled, compiled.create_infer_request()
        result = self._local.request.infer(feed)
        return torch.from_numpy(np.array(result[compiled.output(0)]))  # a copy: the request reuses its buffer

    def _quantised(self, feed: dict[str, np.ndarray]) -> Any:
        import nncf
        import openvino as ov
        import rich  # NNCF draws its progress bars with rich's shared console, on stdout

        console = rich.get_console()
        quiet, console.quiet = console.quiet, True  # stdout may be `lipsyncd render --json`'s
        try:
            quantised = nncf.quantize(self._fp32, nncf.Dataset([feed]), subset_size=1)
        finally:
            console.quiet = quiet
        log.info("Wav2Lip quantised to int8 on this video's first %d faces", len(feed["face"]))
        return ov.Core().compile_model(quantised, "CPU", {
            "INFERENCE_NUM_THREADS": self._streams, "NUM_STREAMS": self._streams,  # one thread per stream
            "INFERENCE_PRECISION_HINT": "f32"})  # int8 where quantised, fp32 elsewhere (never bf16)


def _no_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from reporting usage to Google Analytics. Both turn
    their telemetry on without asking when no consent file exists (and write a client id under
    ``~/intel/``); a service on a NAS must send nothing anywhere and write nothing in a home
    folder. Both fall back to a stub when the ``openvino_telemetry`` package cannot be imported,
    so it is made unimportable in this process (a ``None`` in ``sys.modules`` makes ``import``
    fail), before either is imported."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
