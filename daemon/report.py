"""The two texts a user reads: ``report.txt`` beside the results and ``error.txt`` beside a failure.

Both are built only from the job's database rows, so a restart that resumes filing writes the
same words. They say what happened, why, and what to do — no tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .store import Job, Task

_OUTCOME_WORDS = {
    "done": "finished",
    "failed": "failed",
    "cancelled": "was cancelled",
    "skipped": "was skipped",
}


def report_text(job: Job, tasks: Sequence[Task], outcome: str, error_folder: str | None = None) -> str:
    """``report.txt``: one line per video, and where anything that failed went."""
    lines = [f'lipsyncd job "{job.name}" (#{job.id}) {_OUTCOME_WORDS.get(outcome, outcome)}.', ""]
    if job.audio:
        lines.append(f"Audio:    {job.audio}")
    lines += [f"Dropped:  {job.created_at} UTC", f"Started:  {job.started_at or '-'} UTC", f"Attempts: {job.attempt}"]
    if job.note:
        lines.append(f"Note:     {job.note}")
    if tasks:
        lines += ["", "Videos:"]
        for task in tasks:
            if task.state == "done":
                lines.append(f"  ok      {task.video}  ->  {task.output_name}")
            else:
                lines.append(f"  FAILED  {task.video}: {task.error or task.state}")
    if error_folder:
        lines += ["", f"The videos that failed were moved to {short(error_folder)}, with the audio and an",
                  "error.txt: fix what it says and drop that folder into the inbox again."]
    if job.option_values:
        lines += ["", "Engine options: " + ", ".join(f"{k}={v}" for k, v in sorted(job.option_values.items()))]
    return "\n".join(lines) + "\n"


def error_text(job: Job, tasks: Sequence[Task], outbox_folder: str | None = None) -> str:
    """``error.txt``: what failed, why, what to do."""
    failed = [t for t in tasks if t.state != "done"]
    why = job.error
    if job.outcome == "cancelled":
        head = f'The job "{job.name}" was cancelled (lipsyncd cancel), so it was not finished.'
        todo = "To run it after all, drop this folder into the inbox again."
    elif outbox_folder:
        head = (f'Part of the job "{job.name}" failed: {len(failed)} of {len(tasks)} videos could not be '
                f"lip-synced. The others are in {short(outbox_folder)}.")
        todo = ("Fix or replace the videos listed above (this folder holds only those, with the audio), "
                "then drop this folder into the inbox again.")
        why = None  # the job's message only points here
    else:
        head = f'The job "{job.name}" failed; nothing was produced.'
        todo = "Fix what is described above, then drop this folder into the inbox again (error.txt may stay)."
    lines = [head, ""]
    if why:
        lines += ["Why:", f"  {why}", ""]
    if failed and not (why and all(t.error in (None, why) for t in failed)):
        lines.append("Videos that failed:")
        lines += [f"  {t.video}: {t.error or 'not run (' + t.state + ')'}" for t in failed]
        lines.append("")
    lines += ["What to do:", f"  {todo}", ""]
    lines.append(f"(job #{job.id}, attempt {job.attempt}; details in job.log)" if job.attempt else f"(job #{job.id})")
    return "\n".join(lines) + "\n"


def short(folder: str) -> str:
    """``outbox/Interview`` rather than a server path users cannot open from their machines."""
    path = Path(folder)
    return f"{path.parent.name}/{path.name}"
