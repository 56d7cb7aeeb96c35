"""SpeechAudio.head: the start of a speech for a preview clip, frame for frame the full render's start."""

from __future__ import annotations

import numpy as np
import pytest
from lipsyncd.engine.audio import SAMPLE_RATE, SpeechAudio, melspectrogram


@pytest.fixture(scope="module")
def speech() -> SpeechAudio:
    rng = np.random.default_rng(8)
    t = np.arange(7 * SAMPLE_RATE) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
               + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    return SpeechAudio(path="speech.wav", samples=samples, mel=melspectrogram(samples))


@pytest.mark.parametrize("seconds, fps", [(2.0, 25.0), (2.5, 29.97), (1.0, 60.0)])
def test_the_head_has_the_full_renders_first_frames(speech, seconds, fps):
    head = speech.head(seconds)
    assert head.duration_s == pytest.approx(seconds)
    assert head.frame_count(fps) == round(seconds * fps)
    full, cut = speech.windows(fps), head.windows(fps)
    assert len(cut) == head.frame_count(fps)
    np.testing.assert_array_equal(cut[0:len(cut)], full[0:len(cut)])
    assert head.path == speech.path  # the muxer reads the file and stops at duration_s


def test_a_head_longer_than_the_speech_is_the_whole_speech(speech):
    assert speech.head(60) is speech
