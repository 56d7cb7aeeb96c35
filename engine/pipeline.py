"""The render loop: decode → crop + network → blend + colour conversion → encode, overlapped.

Four kinds of work run at once, joined by bounded queues (:mod:`.stages`)::

    decode thread ──▶ this thread: crops, Wav2Lip on a batch ──▶ pool: paste mouth, BGR→YUV
                                                              ──▶ encode thread: x264 + audio mux

The network is ~100× faster than the codec on a GPU, so the loop is built around keeping the
encoder fed: blending and colour conversion, the per-frame CPU work, run on a pool of threads
(OpenCV and swscale release the GIL) while one thread does nothing but encode, in order.
Memory holds about four chunks of frames whatever the video's length, and a chunk is capped
in bytes (:func:`frames_per_chunk`), so a 4K video does not need four times a 1080p one's RAM.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import av
import numpy as np

from .audio import MelWindows
from .blend import crop_rect, model_crop, paste
from .errors import Cancelled
from .faces.track import FaceTrack
from .infer import MouthGenerator
from .options import Progress, RenderOptions
from .stages import Sink, prefetch

ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]
BLEND_THREADS = min(8, os.cpu_count() or 1)
CHUNK_BYTES = 192 * 2**20
"""Decoded frames per chunk are capped at this size: ~30 frames of 1080p, ~8 of 4K, the batch
size for small videos. The network then runs on smaller batches for big frames, which costs
nothing that shows, as it is far faster than the encoder."""


def frames_per_chunk(width: int, height: int, limit: int) -> int:
    """How many decoded BGR frames of this size to handle together (at most ``limit``, at least 4)."""
    return max(4, min(limit, CHUNK_BYTES // (width * height * 3)))


class StageTimer:
    """Seconds per stage, summed over the threads that do it (for the report and the benchmark).
    The blend workers, the encoder and the frame loop add to it at once: ``+=`` on a dict entry is
    a read then a write, so a lock keeps two threads from losing each other's seconds."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.seconds[stage] += elapsed


def check_stop(should_stop: StopFn | None) -> None:
    """Raise :class:`Cancelled` when the caller asked the render to stop."""
    if should_stop is not None and should_stop():
        raise Cancelled("The render was stopped before it finished; it will run again.")


@dataclass
class FrameLoop:
    """One render's frame loop; :meth:`run` streams ``schedule`` through every stage."""

    track: FaceTrack
    mels: MelWindows
    generator: MouthGenerator
    convert: Callable[[np.ndarray], av.VideoFrame]
    write: Callable[[av.VideoFrame], None]
    options: RenderOptions
    timer: StageTimer
    chunk: int
    """Frames handled together (see :func:`frames_per_chunk`)."""

    def run(self, frames: Iterator[np.ndarray], schedule: list[int],
            progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> None:
        total, done = len(schedule), 0
        with ThreadPoolExecutor(BLEND_THREADS, thread_name_prefix="blend") as pool, \
                Sink(self._encode, depth=2) as encoder:
            decoded = prefetch(frames, depth=self.chunk)
            try:
                while done < total:
                    check_stop(should_stop)
                    with self.timer("decode wait"):
                        chunk = [next(decoded) for _ in range(min(self.chunk, total - done))]
                    sources = schedule[done:done + len(chunk)]
                    with self.timer("infer"):
                        mouths = self._mouths(chunk, sources, done)
                    encoder.put([pool.submit(self._blend, frame, mouth)
                                 for frame, mouth in zip(chunk, mouths, strict=True)])
                    done += len(chunk)
                    if progress:
                        progress(Progress(done, total, "render"))
            finally:
                decoded.close()

    def _mouths(self, chunk: list[np.ndarray], sources: list[int], first: int) -> list[tuple | None]:
        """Per frame: (96×96 generated face, crop rect, landmarks, fade) or None where no face."""
        track, pads = self.track, self.options.pads
        rects: list[tuple[int, int, int, int] | None] = [None] * len(chunk)
        for j, (frame, src) in enumerate(zip(chunk, sources, strict=True)):
            if track.has_face[src]:
                rects[j] = crop_rect(track.boxes[src], pads, frame.shape[1], frame.shape[0])
        if all(rect is None for rect in rects):
            return [None] * len(chunk)
        faces = [(j, rect) for j, rect in enumerate(rects) if rect is not None]
        crops = np.stack([model_crop(chunk[j], rect) for j, rect in faces])
        generated = self.generator(crops, self.mels[[first + j for j, _ in faces]])
        mouths: list[tuple | None] = [None] * len(chunk)
        for k, (j, rect) in enumerate(faces):
            src = sources[j]
            mouths[j] = (generated[k], rect, track.points[src], float(track.fade[src]))
        return mouths

    def _blend(self, frame: np.ndarray, mouth: tuple | None) -> av.VideoFrame:
        with self.timer("blend+convert (all threads)"):
            if mouth is not None:
                paste(frame, *mouth)
            return self.convert(frame)

    def _encode(self, futures: list[Future]) -> None:
        for future in futures:
            converted = future.result()
            with self.timer("encode"):
                self.write(converted)
