"""Wav2Lip on a CPU through OpenVINO: the network converted once per checkpoint and kept on disk,
then run by one inference request per network worker.

Why: OpenVINO's CPU plugin fuses each convolution with its batch norm, ReLU and residual add, and
runs this network's fp32 batches faster than torch does (oneDNN underneath both). Measured on the
generator alone, one thread per batch as the frame loop runs it, interleaved on a 2-core Xeon
(``benchmarks/network_levers.py``): 1.18-1.37× torch's frames per CPU second for whole faces,
1.20× for faces drawn from row 32 down; the output stays within 3e-7 of the reference's golden
numbers (the bar is 2e-5). So with ``runtime: auto`` a CPU runs fp32 through OpenVINO when it is
installed (the ``openvino`` extra) and through torch otherwise; the opt-in int8 (:mod:`.int8`)
starts from the same converted network.

The converted network is kept per checkpoint and first row in ``<cache>/openvino/`` (~145 MB
each): converting costs ~3 CPU seconds, reading it back milliseconds; compiling it costs ~0.3 s
per process and first row used.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ModelError
from .wav2lip import Wav2Lip

log = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Bumped when what is kept changes (the network's inputs and outputs, the naming)."""

MISSING = ("engine.runtime openvino needs OpenVINO, which is not installed here: install it with "
           "`pip install 'lipsyncd[openvino]'`, or set engine.runtime to auto or torch.")


def available() -> bool:
    """Whether OpenVINO can be imported here (``runtime: auto`` then uses it on a CPU)."""
    no_telemetry()
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class _FromRow(nn.Module):
    """Wav2Lip drawing its faces from a fixed row down: the graph OpenVINO converts (it takes
    tensors only, so the row is fixed in the module)."""

    def __init__(self, model: Wav2Lip, first_row: int) -> None:
        super().__init__()
        self.model, self.first_row = model, first_row

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return self.model(mel, face, self.first_row)


Source = Wav2Lip | Callable[[], Wav2Lip]
"""The torch network, or what loads it (e.g. from its checkpoint) when a conversion needs it."""


class ConvertedWav2Lip:
    """A checkpoint's network as OpenVINO models (any batch size), one per first row, read from
    the cache or converted and kept there.

    Given a loader rather than the network, it reads the checkpoint only for a conversion, and does
    not keep it: with the cache filled, a process never holds the torch weights (~140 MB; a
    service's peak memory fell by that much) nor spends the ~0.15 CPU s of reading them."""

    def __init__(self, source: Source, cache_dir: Path | None, model_key: str) -> None:
        """``cache_dir``: where converted (and int8) networks are kept, named by ``model_key``
        (the checkpoint's digest); None keeps none."""
        if not available():  # refused here, before any work
            raise ModelError(MISSING)
        self._source = source
        self.cache_dir, self.model_key = cache_dir, model_key

    def entry(self, name: str) -> Path | None:
        """Where the cache keeps this checkpoint's network called ``name``; None without a cache."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"wav2lip-{self.model_key}-{name}-v{CACHE_VERSION}.xml"

    def __call__(self, first_row: int) -> Any:
        """The fp32 network drawing rows from ``first_row`` down."""
        import openvino as ov

        def convert() -> Any:
            example = (torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
            network = self._source if isinstance(self._source, Wav2Lip) else self._source()
            with torch.inference_mode():  # -1: any batch size
                return ov.convert_model(_FromRow(network.float().eval(), first_row), example_input=example,
                                        input=[("mel", [-1, 1, 80, 16]), ("face", [-1, 6, 96, 96])])

        return kept(self.entry(f"rows{first_row}"), convert)


class Compiled:
    """An OpenVINO model compiled for the CPU, called like the network from several threads at
    once: ``streams`` streams of ``threads`` threads each (the frame loop's network workers and
    their threads), one inference request per calling thread."""

    def __init__(self, model: Any, streams: int, threads: int = 1) -> None:
        import openvino as ov

        self._compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": streams * threads, "NUM_STREAMS": streams,
            "INFERENCE_PRECISION_HINT": "f32"})  # fp32 (int8 where quantised), never bf16
        self._local = threading.local()
        # The first numpy view of an OpenVINO tensor sets up pybind11's numpy API once per process;
        # two network workers doing that at once deadlocked a render (both threads stuck in
        # that one-time setup). Done here, by one thread, before any worker calls.
        self._compiled.create_infer_request().get_input_tensor(0).data  # noqa: B018 - for its side effect

    def __call__(self, feed: dict[str, np.ndarray]) -> torch.Tensor:
        """The model's (first) output for ``feed``, as a torch tensor."""
        return torch.from_numpy(self.outputs(feed)[0])

    def output_shapes(self) -> list[tuple[int, ...]]:
        """The shape of each output (a model compiled for static shapes only)."""
        return [tuple(output.get_shape()) for output in self._compiled.outputs]

    def outputs(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the model for ``feed``, in the model's order."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer(feed)
        return [np.array(result[output]) for output in self._compiled.outputs]  # copies: the request reuses its buffers


def feed_of(mel: torch.Tensor, face: torch.Tensor) -> dict[str, np.ndarray]:
    """The network's inputs as OpenVINO takes them (contiguous arrays; torch's may be channels-last)."""
    return {"mel": np.ascontiguousarray(mel.numpy()), "face": np.ascontiguousarray(face.numpy())}


class OpenVinoWav2Lip:
    """The network in fp32 through OpenVINO: ``(mel, face, first_row) -> rows from first_row``,
    one compiled network per first row asked for (made on first use), for whole faces and the
    last row other than 0 only: a compiled network holds ~0.4 GB, and a render asks for one row
    besides whole faces (:func:`.infer.rows_from`); the next video may ask for another."""

    def __init__(self, source: Source, streams: int, cache_dir: Path | None = None, model_key: str = "",
                 threads: int = 1) -> None:
        """``streams`` calls at once, of ``threads`` threads each; ``source`` and ``cache_dir``:
        see :class:`ConvertedWav2Lip`."""
        self._converted = ConvertedWav2Lip(source, cache_dir, model_key)
        self._streams, self._threads = streams, threads
        self._compiled: dict[int, Compiled] = {}
        self._lock = threading.Lock()

    def __call__(self, mel: torch.Tensor, face: torch.Tensor, first_row: int = 0) -> torch.Tensor:
        with self._lock:
            if first_row not in self._compiled:
                if first_row:  # the row before is a past video's (a batch running on it keeps it alive)
                    self._compiled = {row: net for row, net in self._compiled.items() if row == 0}
                self._compiled[first_row] = Compiled(self._converted(first_row), self._streams, self._threads)
            compiled = self._compiled[first_row]
        return compiled(feed_of(mel, face))


def kept(path: Path | None, convert: Callable[[], Any]) -> Any:
    """The model kept at ``path``, else ``convert()``'s, kept there for the next process (``path``
    None: no cache, converted every time)."""
    model = read(path)
    if model is None:
        model = convert()
        if path is not None:
            save(model, path)
    return model


def read(path: Path | None) -> Any:
    """The network kept at ``path``, or None when there is none or it cannot be read (a damaged
    entry is made again and replaced)."""
    import openvino as ov

    if path is None or not path.exists():
        return None
    try:
        return ov.Core().read_model(path)
    except RuntimeError as error:
        log.warning("OpenVINO cache entry %s unreadable (%s): making it again", path.name, error)
        return None


def save(model: Any, path: Path) -> None:
    """Keep a network as ``path`` (.xml) and its .bin, each written under a temporary name and
    renamed, the .xml last, so a reader never sees half an entry. A cache that cannot be written
    costs the next run a conversion (or calibration), nothing else."""
    import openvino as ov

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.xml")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(model, tmp, compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(tmp, path)
    except OSError as error:
        log.warning("OpenVINO cache entry %s not written: %s", path.name, error)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


def no_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from reporting usage to Google Analytics. Both turn
    their telemetry on without asking when no consent file exists (and write a client id under
    ``~/intel/``); a service on a NAS must send nothing anywhere and write nothing in a home
    folder. Both fall back to a stub when the ``openvino_telemetry`` package cannot be imported,
    so it is made unimportable in this process (a ``None`` in ``sys.modules`` makes ``import``
    fail), before either is imported."""
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]
