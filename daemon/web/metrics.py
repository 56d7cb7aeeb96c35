"""Prometheus metrics in the plain text exposition format, computed from the database per scrape.

Every figure is a gauge read from SQLite when Prometheus asks (the service keeps no counters
in memory that a restart would reset), so a dozen lines of text do what the client library's
custom-collector machinery would; no extra dependency.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from ..progress import mean_seconds_per_video
from ..states import BUSY_STATES, FINAL_STATES, JobState
from ..store import Store


def render_metrics(store: Store, view: dict[str, Any], slots: Sequence[dict[str, Any]] = ()) -> str:
    """``view``: the :func:`~..overview.overview` to report; ``slots``: what each render slot does
    (:func:`~..slot_status.read`; empty before the first job)."""
    jobs = view["jobs"]
    counts = store.count_by_state()
    running = [j for j in jobs if j["state"] in BUSY_STATES]
    lines: list[str] = []
    gauge(lines, "lipsyncd_queue_length", "Jobs waiting to run.", [("", counts.get(JobState.QUEUED, 0))])
    gauge(lines, "lipsyncd_running_jobs", "Jobs rendering or being filed now.", [("", len(running))])
    gauge(lines, "lipsyncd_queue_paused", "1 when the queue is paused.", [("", int(view["paused"]))])
    gauge(lines, "lipsyncd_jobs_finished", "Finished jobs in the history, by outcome.",
          [(f'state="{state}"', counts.get(state, 0)) for state in FINAL_STATES])
    fps = next((j["fps"] for j in running if j.get("fps")), 0.0)
    gauge(lines, "lipsyncd_render_fps",
          "Frames per second of the videos being processed, all slots together (0 when idle).", [("", fps)])
    gauge(lines, "lipsyncd_slots", "Render slots (videos that can render at once; 0 until the first job).",
          [("", len(slots))])
    gauge(lines, "lipsyncd_slots_busy", "Render slots rendering a video now.",
          [("", sum(1 for s in slots if s.get("video")))])
    gauge(lines, "lipsyncd_video_seconds", "Mean seconds per video over the last 20 rendered.",
          [("", mean_seconds_per_video(store.video_seconds()) or 0.0)])
    gauge(lines, "lipsyncd_job_seconds", "Mean seconds per job (start to finish) over the last 20 done.",
          [("", store.mean_job_seconds() or 0.0)])
    gpu = _gpu_memory()
    if gpu is not None:
        gauge(lines, "lipsyncd_gpu_memory_bytes", "GPU memory held by the service's torch.",
              [('kind="allocated"', gpu[0]), ('kind="reserved"', gpu[1])])
    return "\n".join(lines) + "\n"


def gauge(lines: list[str], name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{{{labels}}} {value}" if labels else f"{name} {value}" for labels, value in samples]


def _gpu_memory() -> tuple[int, int] | None:
    """(allocated, reserved) bytes when the engine uses CUDA in this process; never imports torch."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.memory_allocated()), int(torch.cuda.memory_reserved())
