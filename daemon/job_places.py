"""Where a job's folders and input files are now, for whoever needs them again: the dashboard
shows and serves them, a preview ordered after the job ended is made from them.

While a job waits or runs, everything is in its work folder (``inbox/.processing/job-<id>/``,
the inputs in ``input/``); once filed (see :mod:`filing`), in ``outbox/<job>/`` (the inputs kept
in ``input/``) and/or ``error/<job>/`` (the folder as dropped, plus ``error.txt`` and ``job.log``).
A job partly done has its good videos' inputs in the one and the rest in the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .filing import INPUT_DIR, JOB_LOG
from .jobfolder import list_files
from .store import Job

PLACES = ("work", "outbox", "error")
GENERATED = ("error.txt", JOB_LOG)
"""What filing adds to an error folder beside the inputs."""


def folders(job: Job) -> dict[str, Path]:
    """The job's folders that exist now, by place."""
    found = {"work": Path(job.work_dir), "outbox": Path(job.outbox_path) if job.outbox_path else None,
             "error": Path(job.error_path) if job.error_path else None}
    return {place: path for place, path in found.items() if path is not None and path.is_dir()}


@dataclass(frozen=True)
class InputFile:
    place: str
    rel: str
    """Its path inside the place's folder (as on disk)."""
    path: Path

    @property
    def dropped(self) -> str:
        """Its path in the folder as it was dropped."""
        return self.rel if self.place == "error" else self.rel.removeprefix(f"{INPUT_DIR}/")


def input_files(job: Job) -> list[InputFile]:
    """The job's input files wherever they are now (held, kept in ``outbox/<job>/input/``, or in
    ``error/<job>/``), place by place."""
    found = []
    for place, root in folders(job).items():
        for rel in list_files(root):
            if (place != "error" and rel.startswith(f"{INPUT_DIR}/")) or (place == "error" and rel not in GENERATED):
                found.append(InputFile(place, rel, root / rel))
    return found
