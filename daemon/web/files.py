"""A job's files as the dashboard shows them: where they are now, and which may be served.

A job's files move: while it waits or runs they are in its work folder
(``inbox/.processing/job-<id>/``), afterwards in ``outbox/<job>/`` and/or ``error/<job>/``.
The dashboard names a file by (place, relative path) and serves it only if it resolves inside
that place's folder, so no URL can reach anything else on the disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..filing import JOB_LOG, OUTPUT_DIR, PREVIEW_DIR
from ..job_places import PLACES, folders, input_files
from ..jobfolder import list_files
from ..states import TaskState
from ..store import Job, Task

LOG_TAIL_BYTES = 200_000
"""The job page shows the end of job.log; the whole file is a download away."""


@dataclass(frozen=True)
class JobFile:
    place: str
    rel: str
    size: int

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]


def resolve(job: Job, place: str, rel: str) -> Path | None:
    """The file ``rel`` in the job's ``place``, or None when it is not a file inside it."""
    root = folders(job).get(place)
    if root is None or not rel:
        return None
    root = root.resolve()
    path = (root / rel).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def results(job: Job, tasks: list[Task]) -> list[tuple[Task, JobFile]]:
    """The rendered videos that exist now: in the outbox once filed, in the work folder before."""
    places = folders(job)
    found = []
    for task in tasks:
        if task.state != TaskState.DONE:
            continue
        for place, rel in (("outbox", task.output_name), ("work", f"{OUTPUT_DIR}/{task.output_name}")):
            root = places.get(place)
            if root is not None and (root / rel).is_file():
                found.append((task, JobFile(place, rel, (root / rel).stat().st_size)))
                break
    return found


def inputs(job: Job) -> list[JobFile]:
    """The job's input files, wherever they are now (held, kept in outbox/input, or in error/)."""
    return [JobFile(f.place, f.rel, f.path.stat().st_size) for f in input_files(job)]


def previews(job: Job) -> list[tuple[JobFile, dict[str, Any]]]:
    """Each video's preview picture and figures (made before the render; filed with the results);
    ``clip_rel`` in the figures names its preview clip where one was rendered."""
    places = folders(job)
    for place in ("work", "outbox"):
        root = places.get(place)
        if root is None or not (root / PREVIEW_DIR).is_dir():
            continue
        found = []
        for rel in list_files(root / PREVIEW_DIR):
            if rel.endswith(".json"):
                try:
                    figures = json.loads((root / PREVIEW_DIR / rel).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                image = f"{PREVIEW_DIR}/{figures.get('image', '')}"
                clip = f"{PREVIEW_DIR}/{figures['clip']}" if figures.get("clip") else None
                if clip and (root / clip).is_file():  # job.yaml preview_seconds: a rendered clip too
                    figures = {**figures, "clip_rel": clip}
                if (root / image).is_file():
                    found.append((JobFile(place, image, (root / image).stat().st_size), figures))
        return found
    return []


def log_tail(job: Job) -> str | None:
    """The end of the job's log (where it is now), or None when it has none yet."""
    places = folders(job)
    for place in PLACES:
        path = places[place] / JOB_LOG if place in places else None
        if path is not None and path.is_file():
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - LOG_TAIL_BYTES))
                return f.read().decode("utf-8", "replace")
    return None
