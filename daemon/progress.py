"""Progress arithmetic: frames per second, ETAs and expected start times, with no I/O.

The engine calls back with ``Progress(frames_done, frames_total, stage)`` on one scale for the
whole video (face analysis first, then the render; ``frames_done`` only grows). The two stages
run at very different speeds (face analysis is ten times faster than the network on a CPU), so
the speed is measured per stage over a sliding window of recent callbacks, and a video's ETA
uses the render speed: the measured one once the render has run, before that the speed of the
videos rendered earlier (``render_fps_hint``), or none at all rather than a made-up number.

Jobs and the queue are estimated from what the database holds: a job's remaining videos are
assumed to take as long as its finished ones (same audio, so the same output length), or as
the current video is projected to take; a waiting job as long as the recent videos took on
average, per video. An estimate that cannot be made is ``None``, shown as "unknown".

Times in the database are UTC text ``YYYY-MM-DD HH:MM:SS``; everything shown to people is
ISO 8601 with an explicit ``+00:00`` zone (:func:`iso`), the same in the CLI, JSON and the web.
"""

from __future__ import annotations

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


def job_eta(current_eta_s: float | None, current_elapsed_s: float, finished_seconds: Sequence[float],
            videos_after_current: int, typical_video_s: float | None = None) -> float | None:
    """Seconds until a running job's last video is rendered.

    A video takes what this job's finished videos took on average, else what the current one
    is projected to take (elapsed + ETA), else ``typical_video_s`` (recent videos of any job).
    While the current video has no ETA of its own yet (just started), it is assumed to take
    that same time; between two videos pass ``current_eta_s=0`` and ``current_elapsed_s=0``."""
    if finished_seconds:
        per_video: float | None = sum(finished_seconds) / len(finished_seconds)
    elif current_eta_s is not None and current_elapsed_s + current_eta_s > 0:
        per_video = current_elapsed_s + current_eta_s
    else:
        per_video = typical_video_s
    if current_eta_s is None:
        if per_video is None:
            return None
        current_eta_s = max(0.0, per_video - current_elapsed_s)
    if videos_after_current == 0:
        return current_eta_s
    if per_video is None:
        return None
    return current_eta_s + videos_after_current * per_video


def mean_seconds_per_video(recent_seconds: Sequence[float]) -> float | None:
    """The average duration of recently rendered videos (the basis for waiting jobs)."""
    values = [s for s in recent_seconds if s >= 0]
    return sum(values) / len(values) if values else None


def expected_starts(now: datetime, running_left_s: float | None, waiting_videos: Sequence[int],
                    seconds_per_video: float | None, running: bool) -> list[datetime | None]:
    """When each waiting job (in queue order, ``waiting_videos[i]`` videos each) should start.

    ``running_left_s``: seconds the running job still needs (ignored when nothing runs).
    A start that depends on an unknown estimate is None, and so is every start after it."""
    starts: list[datetime | None] = []
    offset: float | None = (running_left_s if running else 0.0)
    for videos in waiting_videos:
        starts.append(now + timedelta(seconds=offset) if offset is not None else None)
        if offset is not None:
            offset = offset + videos * seconds_per_video if seconds_per_video is not None else None
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
