"""The preview: a picture with the crop box and the re-drawn region, and the figures, before the render."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from lipsyncd.engine import LipSyncEngine, RenderOptions, media
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.faces.track import FaceTrack
from lipsyncd.engine.preview import SHOT_HEIGHT, describe, plan, shot_indices
from media_tools import write_wav


@pytest.mark.parametrize("frames, output, loop, expected", [
    (50, 30, "pingpong", "trim"), (50, 50, "pingpong", "same"), (50, 80, "pingpong", "pingpong"),
    (50, 80, "loop", "loop"), (1, 80, "pingpong", "still")])
def test_the_plan_says_how_the_video_meets_the_audio(frames, output, loop, expected):
    assert plan(frames, output, loop) == expected


def test_the_summary_counts_frames_without_a_face():
    text = describe("a.mp4", 50, 38, 2.0, 3.1, "pingpong")
    assert text == ("a.mp4: a face in 38 of 50 frames (12 without: shown unchanged); video 2.0 s, audio 3.1 s: "
                    "the video plays forth and back to fill the audio's 3.1 s.")


def test_shots_prefer_frames_with_a_face():
    boxes = np.full((10, 4), np.nan, np.float32)
    boxes[4:8] = [10, 10, 50, 50]
    track = FaceTrack(boxes, np.zeros((10, 1, 2), np.float32), np.ones(10, np.float32))
    assert shot_indices(track) == [4, 5, 6, 7]
    assert shot_indices(FaceTrack(np.full((10, 4), np.nan, np.float32), np.zeros((10, 1, 2), np.float32),
                                  np.ones(10, np.float32))) == [0, 3, 6, 9]


def test_preview_of_a_real_clip_marks_the_mouth_and_caches_the_track(models_dir, face_clip, speech_file, tmp_path):
    engine = LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "cache")
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: SAMPLE_RATE]))  # 1 s
    seen = []
    result = engine.preview(audio, face_clip, tmp_path / "preview" / "a.jpg", RenderOptions(), progress=seen.append)
    info = media.probe(face_clip)
    assert (result.frames, result.plan) == (info.frame_count, "trim")
    assert result.frames_with_face == result.frames  # a face in every frame of this clip
    assert result.audio_s == pytest.approx(1.0, abs=0.01) and result.video_s == pytest.approx(info.duration_s)
    assert seen and {p.stage for p in seen} == {"faces"}
    sheet = cv2.imread(result.image)
    assert sheet.shape[0] == SHOT_HEIGHT and sheet.shape[1] >= 4 * SHOT_HEIGHT * info.width // info.height - 4
    red = (sheet[..., 2].astype(int) - sheet[..., 1].astype(int)) > 60  # the tinted mouth region
    green = (sheet[..., 1] > 150) & (sheet[..., 0] < 80) & (sheet[..., 2] < 80)  # the crop box
    assert red.mean() > 0.002 and green.mean() > 0.001
    assert list((tmp_path / "cache" / "tracks").iterdir())  # the render reuses it
    if os.environ.get("LIPSYNCD_SCREENSHOTS"):  # the README's example
        shutil.copy(result.image, Path(os.environ["LIPSYNCD_SCREENSHOTS"]) / "preview-example.jpg")
