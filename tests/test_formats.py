"""Every suffix the engine's one list accepts is decoded; an empty file is called empty.

Each format is written here with PyAV (or OpenCV for stills), so the test needs no media files
and proves the promise of ``engine/formats.py`` against the decoders this package ships with.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from lipsyncd.engine import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, AudioError, VideoError
from lipsyncd.engine.audio import decode_audio
from lipsyncd.engine.media import probe, read_frames

FRAMES = 25
SIZE = (64, 48)  # width, height: even, and a multiple of 16 for the MPEG encoders

VIDEO_CODECS = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "mpeg4", ".webm": "libvpx",
                ".avi": "mpeg4", ".mpg": "mpeg1video", ".mpeg": "mpeg1video", ".ts": "mpeg2video"}
AUDIO_CODECS = {".wav": ("wav", "pcm_s16le"), ".mp3": ("mp3", "libmp3lame"), ".m4a": ("ipod", "aac"),
                ".aac": ("adts", "aac"), ".flac": ("flac", "flac"), ".ogg": ("ogg", "libopus")}
"""Ogg with Opus: this FFmpeg build encodes Vorbis only as "experimental"; Vorbis decoding is proven
by the speech fixture every render test reads."""


def test_every_suffix_has_a_decoder_here():
    assert set(VIDEO_CODECS) == set(VIDEO_SUFFIXES)
    assert set(AUDIO_CODECS) == set(AUDIO_SUFFIXES)
    assert len(set(VIDEO_SUFFIXES + AUDIO_SUFFIXES + IMAGE_SUFFIXES)) == \
        len(VIDEO_SUFFIXES + AUDIO_SUFFIXES + IMAGE_SUFFIXES)


def write_video(path: Path, codec: str) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(FRAMES):
            image = np.full((SIZE[1], SIZE[0], 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_each_video_suffix_decodes(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    write_video(path, VIDEO_CODECS[suffix])
    info = probe(path)
    assert (info.width, info.height, info.is_still) == (*SIZE, False)
    frames = list(read_frames(path, info, range(info.frame_count)))
    assert len(frames) >= FRAMES - 2 and frames[0].shape == (SIZE[1], SIZE[0], 3)
    assert frames[-1].mean() > frames[0].mean() + 150  # the pictures themselves, not a repeated first one


@pytest.mark.parametrize("suffix", IMAGE_SUFFIXES)
def test_each_image_suffix_is_a_still(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    ok, data = cv2.imencode(suffix, np.full((SIZE[1], SIZE[0], 3), 128, np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    info = probe(path)
    assert (info.width, info.height, info.is_still, info.frame_count) == (*SIZE, True, 1)


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_each_audio_suffix_decodes(tmp_path, suffix):
    fmt, codec = AUDIO_CODECS[suffix]
    path = tmp_path / f"speech{suffix}"
    rate = 48000
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        want = stream.codec_context.format.name
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, rate, frame_size):
            chunk = tone[start:start + frame_size]
            samples = {"s16": (chunk * 32767).astype(np.int16), "s32": (chunk * 2**31 - 1).astype(np.int32),
                       "flt": chunk}[want[:3]]
            frame = av.AudioFrame.from_ndarray(samples[None, :], format=want, layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    samples = decode_audio(path)  # resampled to 16 kHz
    assert 0.8 * 16000 < samples.size < 1.2 * 16000 and np.abs(samples).max() > 0.3


@pytest.mark.parametrize("name, call, error", [
    ("face.mp4", probe, VideoError), ("face.mpg", probe, VideoError), ("photo.jpg", probe, VideoError),
    ("speech.wav", decode_audio, AudioError),
])
def test_an_empty_file_is_called_empty_not_damaged(tmp_path, name, call, error):
    path = tmp_path / name
    path.touch()
    with pytest.raises(error) as caught:
        call(path)
    assert "is empty (0 bytes)" in str(caught.value)
    assert "Invalid data" not in str(caught.value) and "damaged" not in str(caught.value)
