"""The two texts a user reads: ``report.txt`` beside the results and ``error.txt`` beside a failure.

Both are built only from the job's database rows, so a restart that resumes filing writes the
same words. They say what happened, why, and what to do — no tracebacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .states import JobState, TaskState
from .store import Job, Task

NO_FACE_WARNING_SHARE = 0.2
"""A video with no face in more than this share of its frames was hardly lip-synced: its
result is kept (ok), but the report, the status and the job's message say so in words."""

_OUTCOME_WORDS = {
    JobState.DONE: "finished",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "was cancelled",
    JobState.SKIPPED: "was skipped",
}


PREVIEW_ONLY = "preview only: nothing rendered; drop the folder again without preview_only to render"
"""The message of a job.yaml ``preview_only: true`` job, filed (as skipped) once its previews are written."""
INPUTS_DELETED = "Your input files were deleted after the render, as configured (jobs.keep_inputs: delete)."


def face_warning(frames: int, frames_with_face: int) -> str | None:
    """The warning for a video rendered with too few faces found (None when it is fine), e.g.
    ``ok, but no face was found in 124 of 125 frames: only 1 frame was re-drawn``."""
    missing = frames - frames_with_face
    if frames <= 0 or missing <= NO_FACE_WARNING_SHARE * frames:
        return None
    redrawn = "1 frame was" if frames_with_face == 1 else f"{frames_with_face} frames were"
    return (f"ok, but no face was found in {missing} of {frames} frames: only {redrawn} re-drawn "
            "(is the face small, covered, or turned sideways?)")


def repeat_note(duplicate: Job) -> str:
    """The remark on a job whose audio, videos and options are those of a finished job."""
    return (f"Same audio, videos and options as job #{duplicate.id} ({duplicate.name}), "
            f"finished {duplicate.finished_at} UTC, results in {duplicate.outbox_path}.")


def job_warnings(tasks: Sequence[Task]) -> str | None:
    """One line for ``lipsyncd status`` naming the finished videos that carry a warning."""
    warned = [f"{t.video}: {t.error}" for t in tasks if t.state == TaskState.DONE and t.error]
    return "; ".join(warned) or None


def report_text(job: Job, tasks: Sequence[Task], outcome: JobState, error_folder: str | None = None,
                remarks: Sequence[str] = ()) -> str:
    """``report.txt``: one line per video, and where anything that failed went. ``remarks``:
    sentences about the folder itself (a repeated job, links that were not followed)."""
    warned = any(t.state == TaskState.DONE and t.error for t in tasks)
    preview_only = outcome == JobState.SKIPPED and job.preview_only
    words = "stopped after its previews" if preview_only else _OUTCOME_WORDS.get(outcome, outcome)
    words += ", with a warning" if warned else ""
    lines = [f'lipsyncd job "{job.name}" (#{job.id}) {words}.', ""]
    if job.audio:
        lines.append(f"Audio:    {job.audio}")
    lines += [f"Dropped:  {job.created_at} UTC", f"Started:  {job.started_at or '-'} UTC", f"Attempts: {job.attempt}"]
    lines += [f"Note:     {remark}" for remark in remarks]
    if tasks:
        lines += ["", "Videos:"]
        for task in tasks:
            if task.state == TaskState.DONE and task.error:
                lines.append(f"  WARNING {task.video}  ->  {task.output_name}: {task.error}")
            elif task.state == TaskState.DONE:
                lines.append(f"  ok      {task.video}  ->  {task.output_name}")
            elif preview_only:
                lines.append(f"  PREVIEW {task.video}: not rendered; its preview is in preview/ (if it could be made)")
            else:
                lines.append(f"  FAILED  {task.video}: {task.error or not_finished(task)}")
    if preview_only:
        lines += ["", f"{PREVIEW_ONLY}.", "Your folder as you dropped it is in input/: set preview_only: false in its",
                  "job.yaml (or remove that line) and drop it into the inbox again."]
    if error_folder:
        lines += ["", f"The videos that failed were moved to {short(error_folder)}, with the audio and an",
                  "error.txt: fix what it says and drop that folder into the inbox again."]
    if job.option_values:
        lines += ["", "Engine options: " + ", ".join(f"{k}={v}" for k, v in sorted(job.option_values.items()))]
    return "\n".join(lines) + "\n"


def error_text(job: Job, tasks: Sequence[Task], outbox_folder: str | None = None,
               remarks: Sequence[str] = ()) -> str:
    """``error.txt``: what failed, why, what to do (``remarks`` as in :func:`report_text`)."""
    failed = [t for t in tasks if t.state != TaskState.DONE]
    why = job.error
    if job.outcome == JobState.CANCELLED:
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
        lines.append("Videos that failed:" if job.outcome != JobState.CANCELLED else "Videos:")
        lines += [f"  {t.video}: {t.error or not_finished(t)}" for t in failed]
        lines.append("")
    notes = [r for r in remarks if r not in (why or "")]  # a missing input's error already names its link
    if notes:
        lines += ["Note:", *(f"  {r}" for r in notes), ""]
    lines += ["What to do:", f"  {todo}", ""]
    attempt = f", attempt {job.attempt}" if job.attempt else ""
    lines.append(f"(job #{job.id}{attempt}; details in job.log)")
    return "\n".join(lines) + "\n"


def not_finished(task: Task) -> str:
    """A video that neither finished nor failed: how far it got."""
    if task.state == TaskState.CANCELLED and task.progress > 0:
        frames = f", frame {task.frames_done} of {task.frames_total}" if task.frames_total else ""
        return f"cancelled at {task.progress * 100:.0f} %{frames}; no output was kept"
    if task.state == TaskState.CANCELLED:
        return "cancelled before it started"
    return f"not run ({task.state})"


def short(folder: str | Path) -> str:
    """``outbox/Interview`` rather than a server path users cannot open from their machines."""
    path = Path(folder)
    return f"{path.parent.name}/{path.name}"
