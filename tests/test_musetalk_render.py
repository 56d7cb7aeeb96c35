"""End to end with MuseTalk 1.5: a real face clip + real speech through the engine's frame loop.

The networks carry the conformance rule's weights (:mod:`musetalk_weights`), so the face they
draw is not a real face, but everything else is the product's: length, size, rate, the mouth
region redrawn, the picture away from it untouched, a frame without a face passed through.
MuseTalk takes seconds per face on a CPU, so the clip runs at 10 fps and the output is three
frames: one without a face, two with one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipsyncd.engine import LipSyncEngine, RenderOptions, media
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.faces.detector import FaceDetector
from media_tools import write_wav
from musetalk_weights import rule_networks

pytestmark = pytest.mark.slow

FPS = 10.0


def decode_all(path: Path) -> list[np.ndarray]:
    info = media.probe(path)
    return list(media.read_frames(path, info, range(info.frame_count)))


def test_musetalk_renders_the_mouth_and_keeps_the_rest(face_clip, speech_file, tmp_path):
    faces = decode_all(face_clip)[:5]
    frames = [np.zeros_like(faces[0])] + faces  # a frame without a face, then a face for 5 frames
    height, width = frames[0].shape[:2]
    clip, plain = tmp_path / "clip.mp4", tmp_path / "plain.mp4"
    for path, crf in ((clip, 12), (plain, 18)):  # plain: the encoder alone, for its noise
        with media.VideoWriter(path, width, height, FPS, crf=crf) as writer:
            for frame in frames:
                writer.write(frame)
    engine = LipSyncEngine(tmp_path / "no models", device="cpu", musetalk=rule_networks())
    options = RenderOptions(model="musetalk", batch_size=1)
    engine.check_ready(options)
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: int(0.3 * SAMPLE_RATE)]),
                              options)
    assert audio.prompts is not None  # made once per job, with the audio
    seen = []
    result = engine.render(audio, clip, tmp_path / "out.mp4", options, progress=seen.append)

    out_info = media.probe(tmp_path / "out.mp4")
    assert (out_info.width, out_info.height, out_info.fps) == (width, height, FPS)
    assert result.frames == out_info.frame_count == audio.frame_count(FPS) == 3
    assert abs(out_info.duration_s - audio.duration_s) <= 1 / FPS + 1e-6
    assert result.frames_with_face == 2
    assert seen[-1].stage == "render" and seen[-1].frames_done == seen[-1].frames_total

    source, rendered, reencoded = decode_all(clip), decode_all(tmp_path / "out.mp4"), decode_all(plain)
    assert np.abs(rendered[0].astype(int) - reencoded[0].astype(int)).max() <= 1  # no face: passed through
    (face,) = FaceDetector("cpu").detect([faces[1]])[0:1]
    mx, my = (int(v) for v in face[0].keypoints[3])  # mouth centre, found independently of the engine
    eyes_up = int(face[0].keypoints[:2, 1].max())
    x0, _, x1, _ = face[0].box
    for i in (1, 2):  # fading in after the gap: weights 0.2 and 0.4
        diff = np.abs(source[i].astype(int) - rendered[i].astype(int))
        noise = np.abs(source[i].astype(int) - reencoded[i].astype(int))
        assert diff[my - 8:my + 8, mx - 12:mx + 12].mean() > 2 * noise[my - 8:my + 8, mx - 12:mx + 12].mean() + 2, \
            f"frame {i}: mouth unchanged"
        for region in (np.s_[:eyes_up], np.s_[:, : int(x0) - 10], np.s_[:, int(x1) + 10:]):
            assert diff[region].mean() < noise[region].mean() + 0.5, f"frame {i}: picture away from the mouth changed"


def test_the_model_is_an_option_of_config_job_yaml_and_the_command_line() -> None:
    from click.testing import CliRunner

    from lipsyncd.engine.cli_render import render_command

    assert RenderOptions().model == "wav2lip"
    assert RenderOptions.from_mapping({"model": "musetalk"}, where="job.yaml: engine").model == "musetalk"
    with pytest.raises(ValueError, match="job.yaml: engine.model: must be one of wav2lip, musetalk; got 'sadtalker'"):
        RenderOptions.from_mapping({"model": "sadtalker"}, where="job.yaml: engine")
    assert "--model [wav2lip|musetalk]" in CliRunner().invoke(render_command, ["--help"]).output


def test_a_job_asking_for_musetalk_without_its_files_is_told_where_each_goes(tmp_path):
    from lipsyncd.engine import ModelError

    engine = LipSyncEngine(tmp_path / "models", device="cpu")
    with pytest.raises(ModelError, match=r"7 of its 7 files are missing\. Put musetalkV15/unet\.pth at .*models"):
        engine.check_ready(RenderOptions(model="musetalk"))
