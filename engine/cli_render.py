"""``lipsyncd render``: one audio + one video → one lip-synced video, with a progress bar.

The same engine call the daemon makes per video, for people who want a single result now or
want to try options before putting them in a job.yaml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_models import models_dir_option, resolve_models_dir
from .errors import EngineError
from .options import CHECKPOINTS, DEVICES, FACE_BACKENDS, FACE_CHOICES, LOOP_MODES, PRESETS, Progress, RenderOptions


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
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default=RenderOptions.checkpoint, show_default=True)
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def render_command(ctx: click.Context, audio_path: Path, video_path: Path, output: Path, models_dir: Path | None,
                   cache_dir: Path | None, device: str, as_json: bool, **values: object) -> None:
    """Lip-sync VIDEO to AUDIO and write OUTPUT."""
    from .engine import LipSyncEngine

    options = RenderOptions.from_mapping(values, where="render")
    engine = LipSyncEngine(resolve_models_dir(models_dir), device=device, cache_dir=cache_dir)
    try:
        speech = engine.load_audio(audio_path)
        with click.progressbar(length=1000, label="faces", file=sys.stderr) as bar:
            def show(p: Progress) -> None:
                bar.label = p.stage
                bar.update(int(p.fraction * 1000) - bar.pos)

            result = engine.render(speech, video_path, output, options, progress=show)
    except EngineError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2))
    else:
        click.echo(f"{result.output}: {result.frames} frames, {result.duration_s:.1f} s, "
                   f"{result.width}×{result.height} @ {result.fps:g} fps, rendered in {result.seconds:.1f} s")
