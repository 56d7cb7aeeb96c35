"""How many threads each stage of a render gets, decided on purpose instead of by each library.

Left alone, torch sizes its intra-op pool to every core for every model, x264 starts 1.5 threads
per core, and the blend pool would add more: on a shared or busy CPU these fight for the same
cores and small models suffer most (measured: the face models 7-14× slower with torch's default
threads than with one, on a loaded 2-core box). The plan gives each stage a budget:

- face models (small convolutions on 128-256 px inputs, run before the frame loop): one
  thread, where they are nearly as fast as with several and never spin against other work;
- the network (the only heavy stage on a CPU): one worker per core, each running a whole batch
  on one thread. One batch spread over every core makes each thread wait for the slowest at
  every layer, spinning meanwhile; on a busy 2-core box that cost 2.3× the CPU time per frame
  and twice the wall time (170 vs 71 ms CPU a frame, batch 8, interleaved). In whole renders,
  where x264 and the paste pool share the cores too, the two came out within a few per cent of
  CPU (README, "Speed and memory"). On a GPU: one worker;
- the blend pool: pasting the mouth region is light, two threads keep the encoder fed;
- x264: its own choice on a GPU box, where it is the bottleneck; one thread per core on a CPU;
- OpenCV's own pool (every resize, colour conversion and warp of the crop and the paste): one
  thread. The images are a face's size, so splitting each call over every core only adds
  hand-offs, and the paste pool already runs frames side by side (measured: crop + paste of the
  524² clip 0.76 ms CPU a frame on one OpenCV thread, 1.12-1.28 ms on OpenCV's default two).

``benchmarks/render_bench.py --threads`` measures other plans against this one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import cv2
import torch


def usable_cores() -> int:
    """Cores this process may run on (a container's or systemd's CPU set, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadPlan:
    """Threads per stage: torch intra-op threads for the face models and per network worker,
    network workers (batches run at once), the paste pool's size, x264's thread count
    (0: x264 decides), and OpenCV's own pool per call (0: OpenCV decides)."""

    faces: int
    network: int
    network_workers: int
    blend: int
    encoder: int
    opencv: int

    @classmethod
    def for_device(cls, device_type: str, cores: int | None = None) -> ThreadPlan:
        cores = cores or usable_cores()
        if device_type == "cuda":  # the models run on the GPU; the CPU is the codec's and the blend's
            return cls(faces=1, network=1, network_workers=1, blend=min(8, cores), encoder=0, opencv=1)
        return cls(faces=1, network=1, network_workers=cores, blend=min(2, cores), encoder=cores, opencv=1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def opencv_threads(count: int) -> Iterator[None]:
    """Run the block with OpenCV's pool at ``count`` threads (0: its default), then restore it.
    The setting is the process's: one render at a time per process (:mod:`.engine`)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(count if count > 0 else -1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
