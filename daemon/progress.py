"""Progress arithmetic: frames per second, ETAs and expected start times, with no I/O.

The engine calls back with ``Progress(frames_done, frames_total, stage)`` on one scale for the
whole video (face analysis first, then the render; ``frames_done`` only grows). The two stages
run at very different speeds (face analysis is ten times faster than the network on a CPU), so
the speed is measured per stage over a sliding window of recent callbacks, and a video's ETA
uses the render speed: the measured one once the render has run, before that the speed of the
videos rendered earlier (``render_fps_hint``), or none at all rather than a made-up number.

Jobs and the queue are estimated from what the database holds: a job's remaining videos are
assumed to take as long as its finished ones (same audio, so the same output length), or as
the running ones are projected to take; a waiting job's videos as long as the recent videos
took on average. With several render slots the videos of a job are dealt to whichever slot is
free first, as the runner does, and a job starts when the one before it has ended on every
slot. An estimate that cannot be made is ``None``, shown as "unknown".

Times in the database are UTC text ``YYYY-MM-DD HH:MM:SS``; everything shown to people is
ISO 8601 with an explicit ``+00:00`` zone (:func:`iso`), the same in the CLI, JSON and the web.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

FPS_WINDOW_S = 10.0
"""Speed is measured over the callbacks of the last this many seconds (old ones drop out)."""
RENDER_STAGES = ("faces", "render")
"""The engine's stages of one render, on one frame scale."""
MIN_SPAN_S = 0.5
"""Fewer seconds of measurement than this give no speed yet (a first burst says nothing)."""


@dataclass(frozen=True)
class Snapshot:
    """One video's progress as stored and shown."""

    stage: str
    frames_done: int
    frames_total: int
    fps: float | None
    """Frames per second of the current stage, over the recent window."""
    eta_s: float | None
    """Seconds until this video is rendered; None when it cannot be estimated yet."""

    @property
    def fraction(self) -> float:
        return min(1.0, self.frames_done / self.frames_total) if self.frames_total else 0.0


class VideoMeter:
    """Turns one video's progress callbacks into :class:`Snapshot` s (one meter per video)."""

    def __init__(self, render_fps_hint: float | None = None, window_s: float = FPS_WINDOW_S) -> None:
        self.render_fps_hint = render_fps_hint
        self.window_s = window_s
        self._stage = ""
        self._samples: deque[tuple[float, int]] = deque()
        self._render_fps: float | None = None

    def update(self, stage: str, frames_done: int, frames_total: int, now: float) -> Snapshot:
        """Record a callback at monotonic time ``now`` and return where the video stands."""
        if stage != self._stage:
            self._stage = stage
            self._samples.clear()
        self._samples.append((now, frames_done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        fps = self._fps()
        if stage == "render" and fps is not None:
            self._render_fps = fps
        # faces and render share one scale, timed at the render's speed; another stage (a
        # preview) is a pass of its own, timed at its own speed
        speed = self._render_fps or self.render_fps_hint if stage in RENDER_STAGES else fps
        left = max(0, frames_total - frames_done)
        eta = left / speed if speed else None
        if left == 0:
            eta = 0.0
        return Snapshot(stage, frames_done, frames_total, fps, eta)

    def _fps(self) -> float | None:
        (t0, f0), (t1, f1) = self._samples[0], self._samples[-1]
        span = t1 - t0
        if span < MIN_SPAN_S or f1 <= f0:
            return None
        return (f1 - f0) / span


def remaining_now(eta_s: float | None, written_at: datetime | None, now: datetime) -> float | None:
    """An ETA written at ``written_at``, counted down to ``now`` (never below zero)."""
    if eta_s is None or written_at is None:
        return eta_s
    return max(0.0, eta_s - max(0.0, (now - written_at).total_seconds()))


@dataclass(frozen=True)
class RunningVideo:
    """One video of the running job that a slot renders (or previews) now."""

    eta_s: float | None
    """Seconds it still needs (counted down to now); None while it has no estimate of its own."""
    elapsed_s: float
    """Seconds since it started."""


def video_seconds(finished_seconds: Sequence[float], running: Sequence[RunningVideo],
                  typical_video_s: float | None = None) -> float | None:
    """How long one more video of a job will take: what its finished videos took on average
    (same audio, so the same length), else what its running ones are projected to take
    (elapsed + ETA), else ``typical_video_s`` (recent videos of any job)."""
    if finished_seconds:
        return sum(finished_seconds) / len(finished_seconds)
    projected = [v.elapsed_s + v.eta_s for v in running if v.eta_s is not None and v.elapsed_s + v.eta_s > 0]
    if projected:
        return sum(projected) / len(projected)
    return typical_video_s


def on_slots(busy_s: Sequence[float], videos: int, seconds_per_video: float | None, slots: int = 1) -> float | None:
    """Seconds until the last of a job's videos ends, the way the runner hands them out: the
    videos rendering now end after ``busy_s``, every other slot is free now, and each of
    ``videos`` more goes to whichever slot is free first and takes ``seconds_per_video``. The
    next job starts only then (one job at a time), so a slot left without a video waits.
    None when videos remain but their duration is unknown."""
    end = max(busy_s, default=0.0)
    if videos == 0:
        return end
    if seconds_per_video is None:
        return None
    free = sorted([*busy_s, *[0.0] * max(0, max(1, slots) - len(busy_s))])
    for _ in range(videos):  # a heap: the earliest-free slot takes the next video
        ends = free[0] + seconds_per_video
        heapq.heapreplace(free, ends)
        end = max(end, ends)
    return end


def job_eta(running: Sequence[RunningVideo], finished_seconds: Sequence[float], videos_after: int,
            typical_video_s: float | None = None, slots: int = 1) -> float | None:
    """Seconds until a running job's last video is rendered on ``slots`` slots: the ``running``
    videos, then ``videos_after`` more not started yet (see :func:`video_seconds` and
    :func:`on_slots`). A running video without an ETA of its own yet (just started) is assumed
    to take a whole video's time; between two videos ``running`` is empty."""
    per_video = video_seconds(finished_seconds, running, typical_video_s)
    busy = []
    for video in running:
        if video.eta_s is None and per_video is None:
            return None
        busy.append(video.eta_s if video.eta_s is not None else max(0.0, (per_video or 0.0) - video.elapsed_s))
    return on_slots(busy, videos_after, per_video, slots)


def mean_seconds_per_video(recent_seconds: Sequence[float]) -> float | None:
    """The average duration of recently rendered videos (the basis for waiting jobs)."""
    values = [s for s in recent_seconds if s >= 0]
    return sum(values) / len(values) if values else None


def expected_starts(now: datetime, running_left_s: float | None, waiting_videos: Sequence[int],
                    seconds_per_video: float | None, running: bool, slots: int = 1) -> list[datetime | None]:
    """When each waiting job (in queue order, ``waiting_videos[i]`` videos each) should start,
    one job after the other, each spreading its videos over all ``slots`` (:func:`on_slots`).

    ``running_left_s``: seconds the running job still needs (ignored when nothing runs).
    A start that depends on an unknown estimate is None, and so is every start after it."""
    starts: list[datetime | None] = []
    offset: float | None = (running_left_s if running else 0.0)
    for videos in waiting_videos:
        starts.append(now + timedelta(seconds=offset) if offset is not None else None)
        if offset is not None:
            span = on_slots([], videos, seconds_per_video, slots)
            offset = offset + span if span is not None else None
    return starts


# -- times ---------------------------------------------------------------------------------

def parse_db_time(text: str | None) -> datetime | None:
    """A database time (UTC text, or ISO 8601 with a zone) as an aware datetime."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def iso(value: str | datetime | None) -> str | None:
    """ISO 8601 with an explicit zone, to the nearest second: ``2026-03-01T14:05:09+00:00``."""
    moment = parse_db_time(value) if isinstance(value, str) else value
    if moment is None:
        return None
    return (moment.astimezone(UTC) + timedelta(microseconds=500_000)).replace(microsecond=0).isoformat()


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``45 s``, ``12 min 05 s``, ``2 h 03 min``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
