"""Attempt-scoped work folders: where a worker may write, and the one step that publishes.

Each attempt at a video renders into ``<work>/attempts/<key>/`` (on the job's own work folder,
so on the share the workers of other hosts can reach). A worker never writes anywhere else; the
runner alone moves a finished output into ``<work>/output/`` with one atomic rename, and only for
the attempt it is waiting for. A second, late or duplicate attempt of the same video therefore
finds nothing to overwrite and is simply deleted with its folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .publish import remove_tree

ATTEMPTS_DIR = "attempts"


def attempt_key(job_id: int, task_id: int, attempt: int) -> str:
    return f"job-{job_id}.task-{task_id}.a{attempt}"


def prepare(work_dir: Path, key: str, output_name: str) -> Path:
    """A fresh, empty folder for one attempt; the path its output must be written to."""
    folder = work_dir / ATTEMPTS_DIR / key
    remove_tree(folder)
    folder.mkdir(parents=True)
    return folder / output_name


def publish(output: Path, destination: Path) -> bool:
    """Move a finished attempt's output to ``destination`` (atomic, same folder tree) and drop
    the attempt's folder. False if the attempt left no output (the caller fails the video)."""
    if not output.is_file():
        return False
    os.replace(output, destination)
    discard(output)
    return True


def discard(output: Path) -> None:
    """Delete an attempt's folder and whatever a (possibly still running) worker left in it."""
    remove_tree(output.parent)


def recover(work_dir: Path) -> None:
    """Delete every attempt folder of a job about to (re)start: they belong to attempts of an
    earlier run of the service, whose results were never published, so they are all stale."""
    remove_tree(work_dir / ATTEMPTS_DIR)
