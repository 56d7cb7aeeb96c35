"""The states a job and a video (task) can be in, declared once: every module, query, template and
help text takes them from here, never from a string literal of its own.

Job states::

    intake ─▶ queued ─▶ running ─▶ filing ─▶ done | failed | cancelled | skipped
       │        ▲          │
       │        └──────────┘  (interrupted: service stop or crash; runs again)
       └─▶ filing (job.yaml or folder invalid: straight to error/)

A video (task) is ``queued``, ``running`` (rendering or being previewed), then ``done``,
``failed`` or ``cancelled``. The members are :class:`~enum.StrEnum`: each equals the text stored
in the database (``JobState.DONE == "done"``), so rows, JSON and templates read the same as before.
The schema's ``CHECK`` constraints (frozen in the store's migrations) list the same values; a test
holds the two together.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    INTAKE = "intake"
    """A folder being claimed from the inbox into the work area."""
    QUEUED = "queued"
    RUNNING = "running"
    FILING = "filing"
    """Its outcome and destinations are recorded; its files are being published."""
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    """Same inputs and options as a finished job: not rendered again."""


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: tuple[JobState, ...] = (JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED)
"""A finished job: it is in outbox/ or error/ and nothing more happens to it unless retried."""
ACTIVE_STATES: tuple[JobState, ...] = (JobState.INTAKE, JobState.QUEUED, JobState.RUNNING, JobState.FILING)
"""A job the service still works on."""
WAITING_STATES: tuple[JobState, ...] = (JobState.QUEUED, JobState.INTAKE)
"""A job not started yet (taken in or waiting in the queue)."""
BUSY_STATES: tuple[JobState, ...] = (JobState.RUNNING, JobState.FILING)
"""The job the service is working on right now (rendering, or filing its results)."""
TO_OUTBOX: tuple[JobState, ...] = (JobState.DONE, JobState.SKIPPED)
"""Outcomes whose results go to outbox/ (the others go to error/)."""
RETRYABLE: tuple[JobState, ...] = (JobState.FAILED, JobState.CANCELLED)
"""Finished jobs that ``lipsyncd retry`` (and the dashboard's Retry) can run again."""
