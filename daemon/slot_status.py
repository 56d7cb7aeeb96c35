"""What each slot is rendering, for ``lipsyncd status``: a small JSON file the runner rewrites.

It is a view, not state: written atomically by the service (at most every
``service.progress_interval``), removed when the runner stops, never read back by the service.
The job queue itself lives only in SQLite.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import Config
from .executor import SlotState

log = logging.getLogger(__name__)

FILE = "slots.json"
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
"""One folder per GPU the driver knows: a count without importing torch."""


def write(state_dir: Path, slots: list[SlotState]) -> None:
    """A view only: a state folder that cannot be written shows up elsewhere (the database)."""
    path = state_dir / FILE
    tmp = path.with_name(f".{FILE}.tmp")
    try:
        tmp.write_text(json.dumps([asdict(s) for s in slots]), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("cannot write %s: %s", path, exc)


def clear(state_dir: Path) -> None:
    (state_dir / FILE).unlink(missing_ok=True)


def read(state_dir: Path) -> list[dict[str, Any]]:
    """The slots as last written; empty when no service runs (or it has not rendered yet)."""
    try:
        return json.loads((state_dir / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []


def capacity(config: Config) -> int:
    """How many videos render at once, for the queue's estimates: the slots the runner shows,
    else those the config plans for this host (the GPUs counted from the driver; a Ray cluster's
    are known only once the runner has reached it, so one until then)."""
    shown = read(config.folders.state)
    if shown:
        return len(shown)
    if config.executor.kind == "ray":
        return 1
    e = config.engine
    return _planned(e.gpus, e.workers_per_gpu, e.cpu_workers, e.device)


@functools.lru_cache(maxsize=4)
def _planned(gpus: str | int | tuple[int, ...], workers_per_gpu: int, cpu_workers: int, device: str) -> int:
    """Planned once per setting: asked every second, a config naming a missing GPU would warn as often."""
    from .local_executor import plan_slots  # only here: it loads the engine's audio code

    return max(1, len(plan_slots(gpus, workers_per_gpu, cpu_workers, device, _driver_gpus)))


def _driver_gpus() -> int:
    try:
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        return 0


def format_slots(slots: list[dict[str, Any]]) -> str:
    """``slot gpu0 (host): job 3 interview.mp4 120/300 frames, 24.5 fps`` or ``slot cpu1 (host): idle``."""
    lines = []
    for s in slots:
        if s.get("video"):
            frames = f" {s['frames_done']}/{s['frames_total']} frames" if s.get("frames_total") else ""
            fps = f", {s['fps']:.1f} fps" if s.get("fps") else ""
            lines.append(f"slot {s['name']} ({s['host']}): job {s['job_id']} {s['video']}{frames}{fps}")
        else:
            lines.append(f"slot {s['name']} ({s['host']}): idle")
    return "\n".join(lines)
