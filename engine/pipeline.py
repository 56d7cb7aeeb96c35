"""The render loop: decode → crop + network → paste the mouth → encode, overlapped.

Four kinds of work run at once, joined by bounded queues (:mod:`.stages`)::

    decode thread (yuv420p) ──▶ this thread: groups ──▶ network workers: crops, the model on a batch
                            ──▶ pool: paste the mouth ──▶ encode thread: x264 + audio

Frames stay in the codec's yuv420p from decoder to encoder (:mod:`.yuv`): only the model's face crop is
converted for the network and only the mouth's box is blended back, so per-frame work outside
the codec is small and proportional to the mouth, and the picture outside it is a plain re-encode.
The model is a :class:`~.redraw.Redraw` (Wav2Lip or MuseTalk): everything else is the same for both.
The pool pastes while one thread does nothing but encode, in order, which is what keeps the
encoder fed on a GPU box, where the network is ~100× faster than the codec.

Frames go to the network in groups holding one batch of faces (frames without a face pass
through), so every network call has the same shape. On a CPU, several workers each run a whole
batch on one core (:class:`~.threads.ThreadPlan`) instead of one batch spread over all cores:
no thread waits for another at every layer, which costs half the CPU time per frame on a busy
machine and nothing on an idle one. Between groups, and every 0.1 s while waiting on the
decoder, the network or the encoder, the loop checks for a stop request, and it reports the
frames encoded so far after each group: on a CPU a group is a few frames, well under a second.
Memory holds a few groups whatever the video's length, and a group is capped in bytes
(:func:`frames_per_group`), so a 4K video does not need four times a 1080p one's RAM.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from .blend import MouthMask, mouth_mask, paste
from .errors import Cancelled
from .faces.track import FaceTrack
from .options import Progress
from .redraw import Redraw
from .stages import Sink, prefetch
from .threads import ThreadPlan, opencv_threads
from .yuv import I420, YuvMatrix

ProgressFn = Callable[[Progress], None]
StopFn = Callable[[], bool]
GROUP_BYTES = 128 * 2**20
"""Decoded frames per group, and decoded frames waiting for the loop, are each capped at this
size: ~40 frames of 1080p, ~10 of 4K."""
DECODE_AHEAD = 64
"""Decoded frames waiting for the loop, at most (fewer for big frames: :data:`GROUP_BYTES`)."""
ENCODE_QUEUE = 2
"""Groups waiting for the encoder, beyond the one it encodes."""
ROWS_SAMPLED = 256
"""Source frames whose masks plan a render's network rows (:meth:`.redraw.Redraw.plan`): ~0.1 ms
each, and a few hundred pin a share of 98 % within a few frames. Their masks are kept for the
render (at most ~64 KB each): a clip of up to this many frames, however often ping-pong shows
them, has each mask drawn once."""


def frames_per_group(width: int, height: int, limit: int) -> int:
    """How many yuv420p frames of this size to handle together (at most ``limit``, at least 1)."""
    return max(1, min(limit, GROUP_BYTES * 2 // (width * height * 3)))


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


class Mouth(NamedTuple):
    """What is pasted into one frame, and where."""

    face: np.ndarray
    """The network's BGR face."""
    mask: MouthMask
    """Where it goes and through which mask, in the turned view of the frame (drawn in the
    network worker, once for the network's rows and the paste)."""
    weight: float
    """The track's fade."""
    turns: int
    """Quarter turns that stand the face upright (:meth:`~.yuv.I420.turned`)."""


@dataclass
class FrameLoop:
    """One render's frame loop; :meth:`run` streams ``schedule`` through every stage."""

    track: FaceTrack
    redraw: Redraw
    """The model: where it crops, what it sees, the faces it draws (:mod:`.redraw`)."""
    matrix: YuvMatrix
    """The colour conversion of the frames' samples (the encoder's: the source's matrix and range)."""
    write: Callable[[I420], None]
    timer: StageTimer
    max_frames: int
    """Frames per group at most (see :func:`frames_per_group`)."""
    decode_ahead: int
    """Decoded frames the decoder may hold ready for the loop: they keep it fed while the decoder
    decodes a keyframe interval before handing a backward (ping-pong) run out reversed."""
    threads: ThreadPlan
    size: tuple[int, int]
    """The frames' width and height."""
    encoded: int = field(default=0, init=False)
    """Frames the encoder has taken so far (written by its thread, read by this one)."""
    _planned: dict[int, MouthMask | None] = field(default_factory=dict, init=False)
    """The masks :meth:`_first_rows` drew, by source frame (read by the network workers)."""

    def run(self, frames: Iterator[I420], schedule: list[int],
            progress: ProgressFn | None = None, should_stop: StopFn | None = None) -> None:
        total, done = len(schedule), 0
        stop = partial(check_stop, should_stop)
        self.redraw.plan(self._first_rows(schedule))
        faces_per_call = self.redraw.batch_size
        workers = self.threads.network_workers
        in_network: deque[tuple[list[I420], Future]] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="network", initializer=torch.set_num_threads,
                                initargs=(self.threads.network,)) as network, \
                ThreadPoolExecutor(self.threads.blend, thread_name_prefix="paste") as pool, \
                opencv_threads(self.threads.opencv), \
                Sink(self._encode, depth=ENCODE_QUEUE, interrupt=stop) as encoder:

            def hand_on_oldest() -> None:
                group, mouths = in_network.popleft()
                with self.timer("network wait"):
                    while not wait([mouths], timeout=0.1).done:
                        stop()
                encoder.put([pool.submit(self._paste, frame, mouth)
                             for frame, mouth in zip(group, mouths.result(), strict=True)])
                if progress:
                    progress(Progress(self.encoded, total, "render"))

            decoded = prefetch(frames, depth=self.decode_ahead, interrupt=stop)
            try:
                while done < total:
                    stop()
                    group: list[I420] = []
                    faces = 0
                    with self.timer("decode wait"):
                        while done + len(group) < total and faces < faces_per_call and len(group) < self.max_frames:
                            group.append(next(decoded))
                            faces += bool(self.track.has_face[schedule[done + len(group) - 1]])
                    sources = schedule[done:done + len(group)]
                    in_network.append((group, network.submit(self._mouths, group, sources, done)))
                    done += len(group)
                    # Groups go on to the paste pool as soon as their faces are ready, so the
                    # encoder starts early and never waits while a finished group sits here.
                    while in_network and (len(in_network) >= workers or in_network[0][1].done()):
                        stop()
                        hand_on_oldest()
                while in_network:
                    hand_on_oldest()
            except BaseException:
                for _, mouths in in_network:  # batches not started yet are dropped, running ones finish
                    mouths.cancel()
                raise
            finally:
                decoded.close()
        if progress:
            progress(Progress(total, total, "render"))

    def _first_rows(self, schedule: list[int]) -> np.ndarray:
        """The first row the paste reads (:meth:`.blend.MouthMask.first_face_row`) of the faces
        the render shows, on up to :data:`ROWS_SAMPLED` of its source frames spread evenly; the
        masks drawn for it are kept for the frames that show them (:meth:`_mask`)."""
        shown = np.unique(np.asarray(schedule))
        sample = shown[np.linspace(0, len(shown) - 1, min(len(shown), ROWS_SAMPLED)).round().astype(int)]
        self._planned = {int(src): self._draw_mask(int(src)) for src in sample}
        return np.array([mask.first_face_row(self.redraw.face_size)
                         for mask in self._planned.values() if mask is not None], int)

    def _mask(self, src: int) -> MouthMask | None:
        """Source frame ``src``'s mask (:meth:`_draw_mask`), kept from the row plan when it drew it."""
        return self._planned[src] if src in self._planned else self._draw_mask(src)

    def _draw_mask(self, src: int) -> MouthMask | None:
        """Source frame ``src``'s mask in the view where its face stands upright; None where
        nothing would be pasted (no face, a fade of 0, an empty mask)."""
        assert self.track.turns is not None  # FaceTrack fills it in
        width, height = self.size
        if self.track.turns[src] % 2:
            width, height = height, width
        rect = self.redraw.rect(self.track, src, width, height)
        if rect is None or self.track.fade[src] <= 0:
            return None
        return mouth_mask(self.track.points[src], rect, width, height)

    def _mouths(self, group: list[I420], sources: list[int], first: int) -> list[Mouth | None]:
        """Per frame: what to paste, or None where the frame has no face (runs in a network worker)."""
        track, turns = self.track, self.track.turns
        assert turns is not None  # FaceTrack fills it in
        views = [frame.turned(int(turns[src])) for frame, src in zip(group, sources, strict=True)]
        masks = {j: mask for j, src in enumerate(sources) if (mask := self._mask(src))}
        mouths: list[Mouth | None] = [None] * len(group)
        if not masks:
            return mouths
        with self.timer("network (all workers)"):
            crops = np.stack([self.redraw.crop(views[j], mask.rect, self.matrix) for j, mask in masks.items()])
            rows = np.array([mask.first_face_row(self.redraw.face_size) for mask in masks.values()])
            generated = self.redraw(crops, [first + j for j in masks], rows)
        for face, (j, mask) in zip(generated, masks.items(), strict=True):
            mouths[j] = Mouth(face, mask, float(track.fade[sources[j]]), int(turns[sources[j]]))
        return mouths

    def _paste(self, frame: I420, mouth: Mouth | None) -> I420:
        if mouth is not None:
            with self.timer("paste (all threads)"):
                paste(frame.turned(mouth.turns), mouth.face, mouth.mask, mouth.weight, self.matrix)
        return frame

    def _encode(self, futures: list[Future]) -> None:
        for future in futures:
            frame = future.result()
            with self.timer("encode"):
                self.write(frame)
            self.encoded += 1
