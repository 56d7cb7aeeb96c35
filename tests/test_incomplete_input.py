"""A file still being copied is never rendered as if it were whole.

Each input is made complete with PyAV (or taken from tests/fixtures/media), then cut in half (a
copy that stopped) or zero-filled from the middle (Explorer's preallocated copy, half filled in).
The check must say "incomplete", and the complete file must pass unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest
from lipsyncd.engine import IncompleteInputError, LipSyncEngine, RenderOptions
from lipsyncd.engine.audio import decode_audio, load_speech
from lipsyncd.engine.complete import cut_short, has_zero_tail
from lipsyncd.engine.errors import VideoError
from lipsyncd.engine.media import probe, read_frames
from test_media import make_audio, make_video


def cut(src: Path, dst: Path, how: str) -> Path:
    """``dst``: ``src`` cut in half, or at full size with its second half still zeros."""
    data = src.read_bytes()
    half = len(data) // 2
    dst.write_bytes(data[:half] if how == "cut" else data[:half] + bytes(len(data) - half))
    return dst


def read_all(path: Path) -> int:
    info = probe(path)
    return sum(1 for _ in read_frames(path, info, range(info.frame_count)))


@pytest.fixture(scope="module")
def videos(face_clip: Path, tmp_path_factory) -> dict[str, Path]:
    """The 2 s face clip (H.264 in MP4) in four containers: real pictures, realistic sizes."""
    folder = tmp_path_factory.mktemp("whole")
    return {".mp4": face_clip, ".mkv": remux(face_clip, folder / "clip.mkv"),
            ".webm": reencode(face_clip, folder / "clip.webm", "libvpx"),
            ".avi": reencode(face_clip, folder / "clip.avi", "mpeg4")}


def remux(src: Path, dst: Path) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst


def reencode(src: Path, dst: Path, codec: str) -> Path:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        stream.bit_rate = 1_000_000
        for i, decoded in enumerate(inp.decode(video=0)):
            frame = av.VideoFrame.from_ndarray(decoded.to_ndarray(format="rgb24"), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return dst


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi"])
@pytest.mark.parametrize("how", ["cut", "zeros"])
def test_a_half_copied_video_is_incomplete_and_the_whole_one_reads(videos, tmp_path, suffix, how):
    whole = videos[suffix]
    assert read_all(whole) == 50
    with pytest.raises(IncompleteInputError) as caught:
        read_all(cut(whole, tmp_path / f"face{suffix}", how))
    assert str(caught.value).startswith(f"The file 'face{suffix}' looks incomplete (still being copied?): ")


def test_fewer_pictures_than_declared_is_caught_while_decoding(tmp_path):
    """The during-render check: the header promises 75 frames (an MP4 whose index came first),
    the data holds fewer; reading past the last one must not repeat it."""
    info = probe(make_video(tmp_path / "whole.mp4", 75, gop=6))
    short = make_video(tmp_path / "short.mp4", 40, gop=6)
    with pytest.raises(IncompleteInputError, match="it says it has 75 frames but only 40 can be decoded"):
        list(read_frames(short, info, range(info.frame_count)))
    assert len(list(read_frames(short, info, range(40)))) == 40  # what is there reads fine


@pytest.mark.parametrize("name, data", [
    ("noise.mkv", b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40),
    ("garbage after a box.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 12),  # no known box follows
])
def test_a_damaged_video_that_does_not_end_in_zeros_stays_damaged(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert cut_short(path) is None
    with pytest.raises(VideoError):
        probe(path)


@pytest.mark.parametrize("how", ["cut", "zeros"])
def test_a_half_copied_flac_is_incomplete(tmp_path, how):
    whole = tmp_path / "speech.flac"
    make_flac(whole, seconds=6)
    assert abs(decode_audio(whole).size / 16000 - 6) < 0.01
    with pytest.raises(IncompleteInputError, match="speech cut.flac"):
        decode_audio(cut(whole, tmp_path / "speech cut.flac", how))


def test_a_half_copied_wav_is_incomplete(tmp_path):
    """FFmpeg clamps a WAV to the bytes present: its RIFF header is the only witness."""
    whole = make_audio(tmp_path / "speech.wav", 4)
    assert cut_short(whole) is None
    with pytest.raises(IncompleteInputError, match="its header says"):
        load_speech(cut(whole, tmp_path / "half.wav", "cut"))


def test_audio_with_no_declared_length_is_judged_by_a_zero_tail(speech_file, tmp_path):
    whole = shutil.copy(speech_file, tmp_path / "speech.ogg")  # Ogg Vorbis: no length in a header
    assert decode_audio(whole).size > 0
    with pytest.raises(IncompleteInputError, match="its end is still empty"):
        decode_audio(cut(whole, tmp_path / "half.ogg", "zeros"))


def test_zero_tails_spare_pcm_silence_and_empty_files(tmp_path):
    (tmp_path / "silent end.wav").write_bytes(b"RIFF" + bytes(10_000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "filled.mp4").write_bytes(bytes(10_000) + b"moov")
    (tmp_path / "hole.mp4").write_bytes(b"ftyp" + bytes(10_000))
    assert [has_zero_tail(tmp_path / n) for n in ("silent end.wav", "empty.mp4", "filled.mp4", "hole.mp4")] == \
        [False, False, False, True]


def make_flac(path: Path, seconds: float) -> Path:
    wav = make_audio(path.with_suffix(".wav"), seconds)
    with av.open(str(wav)) as inp, av.open(str(path), "w") as out:
        stream = out.add_stream("flac", rate=16000)
        for frame in inp.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.mark.slow
def test_the_engine_never_renders_a_preallocated_mkv(models_dir, face_clip, speech_file, tmp_path):
    """The issue's case: an .mkv whose second half was not written yet rendered as a success."""
    mkv = remux(face_clip, tmp_path / "face.mkv")
    engine = LipSyncEngine(models_dir, device="cpu")
    audio = engine.load_audio(speech_file)
    output = tmp_path / "out.mp4"
    with pytest.raises(IncompleteInputError):
        engine.render(audio, cut(mkv, tmp_path / "copying.mkv", "zeros"), output, RenderOptions(batch_size=16))
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []
