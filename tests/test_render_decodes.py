"""Decode passes of a render: the face pass analyses only the source frames the schedule shows
(plus the track's look-ahead), the face-track cache stays right for a later, longer audio, and a
ping-pong render decodes about one picture per output frame, with the same output as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from media_tools import write_wav

from lipsyncd.engine import LipSyncEngine, RenderOptions, media, video_in
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.faces.track import FaceTrack, look_ahead
from lipsyncd.engine.infer import MouthGenerator
from lipsyncd.engine.yuv import I420

pytestmark = pytest.mark.slow
OPTIONS = RenderOptions(smooth_frames=2)
"""A short smoothing, so the look-ahead (16 frames) leaves part of the 50-frame test clip unread."""


@pytest.fixture
def engine(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LipSyncEngine:
    """The engine with the network replaced by a cheap stand-in: decoding is what is measured."""
    monkeypatch.setattr(MouthGenerator, "__call__", lambda self, crops, mels, rows=None, row=0: crops[:, ::-1].copy())
    return LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path / "cache")


def speech(engine: LipSyncEngine, speech_file: Path, folder: Path, seconds: float):  # type: ignore[no-untyped-def]
    samples = decode_audio(speech_file)[: int(seconds * SAMPLE_RATE)]
    return engine.load_audio(write_wav(folder / f"speech_{seconds}.wav", samples))


def test_short_audio_analyses_only_the_frames_it_shows_and_the_cache_grows_for_longer_audio(
        engine: LipSyncEngine, face_clip: Path, speech_file: Path, tmp_path: Path, decoded: list[int]) -> None:
    info = media.probe(face_clip)
    assert info.frame_count == 50
    short = speech(engine, speech_file, tmp_path, 0.4)  # 10 output frames
    cache = engine._track_cache_path(face_clip, OPTIONS)

    result = engine.render(short, face_clip, tmp_path / "short.mp4", OPTIONS)
    analysed = 10 + look_ahead(OPTIONS.smooth_frames)
    assert result.frames == 10 and "faces" in result.stage_seconds
    assert len(FaceTrack.load(cache)) == analysed < info.frame_count
    # the face pass decodes the analysed frames, the render the 10 it shows (each with at most
    # one picture of the decoder's look-ahead); before: all 50, then 10
    assert len(decoded) <= analysed + 1 + 10 + 1, len(decoded)

    whole = engine._analyse(face_clip, info, info.frame_count, OPTIONS, None, None, None)
    partial = FaceTrack.load(cache)
    shown = slice(0, 10)
    np.testing.assert_allclose(partial.boxes[shown], whole.boxes[shown], atol=1e-3)
    np.testing.assert_allclose(partial.points[shown], whole.points[shown], atol=1e-3)
    np.testing.assert_array_equal(partial.fade[shown], whole.fade[shown])

    longer = speech(engine, speech_file, tmp_path, 1.6)  # 40 frames: needs the whole clip
    result = engine.render(longer, face_clip, tmp_path / "longer.mp4", OPTIONS)
    assert "faces" in result.stage_seconds  # the short track was not taken for it
    grown = FaceTrack.load(cache)
    assert len(grown) == info.frame_count
    np.testing.assert_allclose(grown.boxes, whole.boxes, atol=1e-3)

    result = engine.render(short, face_clip, tmp_path / "short again.mp4", OPTIONS)
    assert "faces" not in result.stage_seconds  # the whole track serves any shorter audio


def test_a_pingpong_render_decodes_about_one_picture_per_output_frame_with_the_same_output(
        engine: LipSyncEngine, face_clip: Path, speech_file: Path, tmp_path: Path, decoded: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    audio = speech(engine, speech_file, tmp_path, 2.4)  # 60 frames of a 50-frame clip: 0..49, 48..39
    engine.render(audio, face_clip, tmp_path / "warm.mp4", OPTIONS)  # the face track is cached now
    decoded.clear()
    engine.render(audio, face_clip, tmp_path / "ours.mp4", OPTIONS)
    assert len(decoded) <= 50 + 2, len(decoded)  # before: 50, then the backward run again from the keyframe

    def plain_read_i420(path, info, indices):  # type: ignore[no-untyped-def]
        """Every picture decoded forward once, then picked by the schedule (the reference)."""
        frames = list(video_in.read_i420(path, info, range(info.frame_count)))
        for slot in indices:
            yield I420(frames[slot].data.copy())

    monkeypatch.setattr(media, "read_i420", plain_read_i420)
    engine.render(audio, face_clip, tmp_path / "plain.mp4", OPTIONS)
    ours, plain = (list(media.read_frames(p, media.probe(p), range(60))) for p in
                   (tmp_path / "ours.mp4", tmp_path / "plain.mp4"))
    assert all(np.array_equal(a, b) for a, b in zip(ours, plain, strict=True))


@pytest.mark.parametrize("smooth_frames", [0, 7])
def test_a_track_analysed_as_far_as_its_look_ahead_matches_the_whole_videos_on_the_frames_shown(
        engine: LipSyncEngine, face_clip: Path, smooth_frames: int) -> None:
    info = media.probe(face_clip)
    options = RenderOptions(smooth_frames=smooth_frames)
    shown = 50 - look_ahead(smooth_frames) - 1
    partial = engine._analyse(face_clip, info, shown + look_ahead(smooth_frames), options, None, None, None)
    whole = engine._analyse(face_clip, info, info.frame_count, options, None, None, None)
    assert len(partial) < len(whole)
    np.testing.assert_allclose(partial.boxes[:shown], whole.boxes[:shown], atol=1e-3)
    np.testing.assert_allclose(partial.points[:shown], whole.points[:shown], atol=1e-3)
    np.testing.assert_array_equal(partial.fade[:shown], whole.fade[:shown])
    np.testing.assert_array_equal(partial.turns[:shown], whole.turns[:shown])
