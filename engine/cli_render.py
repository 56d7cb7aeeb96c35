"""``lipsyncd render``: one audio + one video → one lip-synced video, with a progress bar.

The same engine call the daemon makes per video, for people who want a single result now or
want to try options before putting them in a job.yaml.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

from . import media
from .cli_models import models_dir_option, resolve_models_dir
from .errors import EngineError
from .options import (
    CHECKPOINTS,
    DEVICES,
    FACE_BACKENDS,
    FACE_CHOICES,
    LOOP_MODES,
    MODELS,
    PRECISIONS,
    PRESETS,
    RUNTIMES,
    Progress,
    RenderOptions,
)


@click.command("render")
@click.option("--audio", "audio_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Speech to lip-sync to (.wav .mp3 .m4a .aac .flac .ogg, or a video's sound).")
@click.option("--video", "video_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Face video (.mp4 .mov .mkv .webm .avi) or photo (.jpg .png).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output .mp4.")
@models_dir_option
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep face tracks here, so the same video renders faster next time.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--model", type=click.Choice(MODELS), default=RenderOptions.model, show_default=True,
              help="wav2lip (fast, 96 px face) or musetalk (MuseTalk 1.5: 256 px face, slow without a GPU).")
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default=RenderOptions.checkpoint, show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=RenderOptions.precision, show_default=True,
              help="Wav2Lip on a CPU: fp32, or int8 (renders ~1.9x faster on CPUs with VNNI, slightly "
                   "different picture; needs the int8 extra).")
@click.option("--runtime", type=click.Choice(RUNTIMES), default=RenderOptions.runtime, show_default=True,
              help="What runs Wav2Lip and the face models in fp32 on a CPU: openvino (faster, needs the openvino "
                   "extra), torch, or auto (openvino when installed and --cache-dir keeps its converted networks).")
@click.option("--loop", type=click.Choice(LOOP_MODES), default=RenderOptions.loop, show_default=True,
              help="When the audio is longer than the video.")
@click.option("--face", type=click.Choice(FACE_CHOICES), default=RenderOptions.face, show_default=True,
              help="Which face, when several are visible.")
@click.option("--face-backend", type=click.Choice(FACE_BACKENDS), default=RenderOptions.face_backend,
              show_default=True, help="What finds the faces.")
@click.option("--crf", type=click.IntRange(0, 51), default=RenderOptions.crf, show_default=True)
@click.option("--preset", type=click.Choice(PRESETS), default=RenderOptions.preset, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=RenderOptions.batch_size, show_default=True)
@click.option("--pads", type=int, nargs=4, default=RenderOptions.pads, show_default=True,
              help="Extra pixels around the face: top bottom left right.")
@click.option("--seconds", type=click.FloatRange(0.2, min_open=False), default=None,
              help="Render only the first SECONDS of the audio: a quick look before the whole.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def render_command(ctx: click.Context, audio_path: Path, video_path: Path, output: Path, models_dir: Path | None,
                   cache_dir: Path | None, device: str, seconds: float | None, as_json: bool,
                   **values: object) -> None:
    """Lip-sync VIDEO to AUDIO and write OUTPUT."""
    from .engine import LipSyncEngine

    options = RenderOptions.from_mapping(values, where="render")
    engine = LipSyncEngine(resolve_models_dir(models_dir), device=device, cache_dir=cache_dir)
    try:
        speech = engine.load_audio(audio_path, options)
        if seconds is not None:
            speech = engine.audio_head(speech, seconds)
        meter = RenderMeter(faces_frames=engine.frames_to_analyse(speech, media.probe(video_path), options))
        with progress_bar(meter) as show:
            result = engine.render(speech, video_path, output, options, progress=show)
    except EngineError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
    else:
        click.echo(f"{result.output}: {result.frames} frames, {result.duration_s:.1f} s, "
                   f"{result.width}×{result.height} @ {result.fps:g} fps, rendered in {result.seconds:.1f} s")


REDRAW_S = 0.5
"""How often the bar is redrawn between the engine's callbacks, which come once per batch of
frames (a batch of a small video can take half a minute on a CPU)."""


@dataclass
class RenderMeter:
    """Where a render stands, for one bar over both of its stages: the face analysis (the first
    ``faces_frames`` on the engine's scale; skipped when the track was cached), then the frames.

    Speed and time left are measured per stage: the face analysis runs about ten times faster
    than the render on a CPU, so one average over both (click's own ETA) would promise far
    too little time. Between two callbacks the position moves on at the stage's measured speed,
    but never past the end of the batch in progress (as large as the last one), so the bar
    moves steadily and never shows more than the engine can have done."""

    faces_frames: int
    stage: str = "faces"
    done: int = 0
    total: int = 0
    _base: int = 0
    """Where the current stage began on the engine's scale."""
    _since: tuple[float, int] | None = None
    """(time, frames) the current stage's speed is measured from: the previous stage's last callback."""
    _last: tuple[float, int] | None = None
    _step: int = 0

    def update(self, stage: str, done: int, total: int, now: float) -> None:
        if stage != self.stage or self._last is None:
            self._base, self._since = self.done, self._last or (now, done)
        self._step = max(0, done - self.done) or self._step
        self.stage, self.done, self.total, self._last = stage, done, total, (now, done)

    @property
    def _stage_end(self) -> int:
        return min(self.faces_frames, self.total) if self.stage == "faces" else self.total

    def fps(self) -> float | None:
        """Frames per second of the current stage; None until it can be measured."""
        if self._since is None or self._last is None:
            return None
        (t0, f0), (t1, f1) = self._since, self._last
        return (f1 - f0) / (t1 - t0) if f1 > f0 and t1 > t0 else None

    def position(self, now: float) -> float:
        """The frame the render has probably reached by ``now`` (see the class docstring)."""
        fps = self.fps()
        if fps is None or self._last is None:
            return float(self.done)
        ceiling = min(self.done + self._step, self._stage_end)
        return max(float(self.done), min(float(ceiling), self.done + fps * (now - self._last[0])))

    def seconds_left(self, now: float) -> float | None:
        """Until the end of the current stage (the render's: the end of it all)."""
        fps = self.fps()
        return None if fps is None else max(0.0, (self._stage_end - self.position(now)) / fps)

    def describe(self, now: float) -> str:
        """``412/750 frames  4.2 fps  ETA 0:01:20``, the frames counted within the stage."""
        fps, left = self.fps(), self.seconds_left(now)
        until = "faces done in" if self.stage == "faces" else "ETA"
        return (f"{self.done - self._base}/{self._stage_end - self._base} frames  "
                f"{f'{fps:.1f} fps' if fps is not None else 'measuring speed'}  "
                f"{until} {_clock(left) if left is not None else 'unknown'}")


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


@contextmanager
def progress_bar(meter: RenderMeter, scale: int = 1000) -> Iterator[Callable[[Progress], None]]:
    """A click bar on stderr, labelled by stage, kept moving by a redraw thread; yields the
    engine's progress callback."""
    lock = threading.Lock()
    stopped = threading.Event()
    bar: ProgressBar[int]
    with click.progressbar(length=scale, label="faces", file=sys.stderr, show_eta=False, show_percent=True,
                           item_show_func=lambda _: meter.describe(time.monotonic())) as bar:
        def draw() -> None:
            with lock:
                bar.label = meter.stage
                if meter.total:
                    target = min(scale, int(meter.position(time.monotonic()) / meter.total * scale))
                    bar.update(max(0, target - bar.pos))
                bar.render_progress()

        def show(p: Progress) -> None:
            with lock:
                meter.update(p.stage, p.frames_done, p.frames_total, time.monotonic())
            draw()

        def redraw() -> None:
            while not stopped.wait(REDRAW_S):
                draw()

        ticker = threading.Thread(target=redraw, name="progress-bar", daemon=True)
        ticker.start()
        try:
            yield show
        finally:
            stopped.set()
            ticker.join()
