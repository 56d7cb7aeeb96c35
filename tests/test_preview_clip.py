"""A preview clip (job.yaml preview_seconds) through the real engine: the render on the audio's start."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from lipsyncd.engine import LipSyncEngine, RenderOptions, media
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.cli_render import render_command
from media_tools import write_wav

pytestmark = pytest.mark.slow


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def test_a_preview_clip_is_the_first_seconds_of_the_render(models_dir, face_clip, speech_file, tmp_path):
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "cache")
    speech = write_wav(tmp_path / "speech.wav", decode_audio(speech_file)[: SAMPLE_RATE])
    audio = engine.load_audio(speech)
    clip = tmp_path / "preview" / "face-preview.mp4"
    clip.parent.mkdir()
    result = engine.render(engine.audio_head(audio, 0.6), face_clip, clip, RenderOptions(batch_size=8))
    info = media.probe(clip)
    assert result.frames == info.frame_count == round(0.6 * info.fps)
    assert audio_seconds(clip) == pytest.approx(0.6, abs=0.05)  # the sound is cut too, not 1 s over 0.6 s of picture
    full = tmp_path / "full.mp4"
    engine.render(audio, face_clip, full, RenderOptions(batch_size=8))
    first = next(iter(media.read_frames(clip, info, [5])))
    same = next(iter(media.read_frames(full, media.probe(full), [5])))
    assert np.abs(first.astype(int) - same.astype(int)).mean() < 1.0  # the clip shows what the render will


def test_lipsyncd_render_shows_both_stages_and_renders_the_first_seconds_on_request(models_dir, face_clip,
                                                                                    speech_file, tmp_path):
    speech = write_wav(tmp_path / "speech.wav", decode_audio(speech_file)[: 3 * SAMPLE_RATE])
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(render_command, ["--audio", str(speech), "--video", str(face_clip), "-o", str(out),
                                                 "--models-dir", str(models_dir), "--device", "cpu",
                                                 "--batch-size", "8", "--seconds", "0.4"])
    assert result.exit_code == 0, result.output
    assert result.output.split()[:2] == ["faces", "render"]
    assert media.probe(out).duration_s == pytest.approx(0.4, abs=0.05)
