"""engine.media: probe, constant-rate streaming decode for any schedule, and the H.264/AAC writer.

All media are generated here with PyAV: every frame carries its own index as black/white blocks,
so a test can tell exactly which source frame a decoded picture is.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from lipsyncd.engine import video_in
from lipsyncd.engine.errors import IncompleteInputError, VideoError
from lipsyncd.engine.media import ColorTags, VideoWriter, frame_schedule, probe, read_frames, read_i420
from lipsyncd.engine.yuv import I420

BLOCK = 8
BITS = 12  # two rows of six 8×8 blocks: frame numbers up to 4095


def pattern(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A grey BGR frame with ``index`` written in blocks at the top left and a red top-left corner
    marker below them (so rotation is visible too)."""
    frame = np.full((height, width, 3), 128, np.uint8)
    for bit in range(BITS):
        y, x = divmod(bit, 6)
        frame[y * BLOCK:(y + 1) * BLOCK, x * BLOCK:(x + 1) * BLOCK] = 255 if index >> bit & 1 else 0
    frame[2 * BLOCK:3 * BLOCK, :BLOCK] = (0, 0, 255)
    return frame


def index_of(frame: np.ndarray) -> int:
    luma = frame.mean(axis=2)
    return sum(1 << bit for bit in range(BITS)
               if luma[divmod(bit, 6)[0] * BLOCK + 2:divmod(bit, 6)[0] * BLOCK + 6,
                       divmod(bit, 6)[1] * BLOCK + 2:divmod(bit, 6)[1] * BLOCK + 6].mean() > 128)


def make_video(path: Path, count: int, *, codec: str = "libx264", size: tuple[int, int] = (64, 48),
               rate: int = 25, pts: list[int] | None = None, time_base: Fraction | None = None,
               rotation: int | None = None, gop: int = 12, pix_fmt: str = "yuv420p") -> Path:
    """Encode ``count`` pattern frames; ``pts`` (in ``time_base``) makes the rate variable."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.bit_rate = 4_000_000
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(pattern(i, *size), format="bgr24")
            frame.pts = pts[i] if pts is not None else i
            if time_base is not None:
                frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_audio(path: Path, seconds: float, *, rate: int = 16000, channels: int = 1) -> Path:
    """A 440 Hz tone as 16-bit PCM WAV."""
    layout = "mono" if channels == 1 else "stereo"
    samples = int(seconds * rate)
    tone = (np.sin(2 * np.pi * 440 * np.arange(samples) / rate) * 8000).astype(np.int16)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.tile(tone, (1, channels)).reshape(1, -1) if channels > 1
                                           else tone[None, :], format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def indices_read(path: Path, schedule: list[int]) -> list[int]:
    info = probe(path)
    return [index_of(frame) for frame in read_frames(path, info, schedule)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", 100)


# --- probe ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, codec", [("clip.mp4", "libx264"), ("clip.webm", "libvpx"),
                                         ("clip.mkv", "libvpx-vp9"), ("clip.avi", "mpeg4")])
def test_probe_and_forward_read_each_container(tmp_path: Path, name: str, codec: str) -> None:
    path = make_video(tmp_path / name, 30, codec=codec)
    info = probe(path)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 25.0, 30)
    assert info.duration_s == pytest.approx(1.2, abs=0.04)
    assert (info.rotation, info.is_still) == (0, False)
    assert indices_read(path, list(range(30))) == list(range(30))


def test_probe_odd_size_and_reads_it_whole(tmp_path: Path) -> None:
    path = make_video(tmp_path / "odd.mp4", 5, size=(161, 121), pix_fmt="yuv444p")  # 4:2:0 needs even
    info = probe(path)
    assert (info.width, info.height) == (161, 121)
    frames = list(read_frames(path, info, [4, 0]))
    assert [f.shape for f in frames] == [(121, 161, 3)] * 2
    assert [index_of(f) for f in frames] == [4, 0]


def test_rotated_mp4_is_turned_upright(tmp_path: Path) -> None:
    # Display matrix "turn 90° clockwise" (what a phone held upright writes; PyAV counts CCW).
    path = make_video(tmp_path / "rotated.mp4", 6, rotation=-90)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (90, 48, 64)
    frames = list(read_frames(path, info, [5, 1]))
    assert frames[0].shape == (64, 48, 3)
    # Turning back counter-clockwise must give the stored pattern, so the direction is right.
    upright = [cv2.rotate(f, cv2.ROTATE_90_COUNTERCLOCKWISE) for f in frames]
    assert [index_of(f) for f in upright] == [5, 1]


@pytest.mark.parametrize("kind", ["plain", "rotated", "odd 4:4:4", "still"])
def test_i420_frames_are_the_bgr_frames_unconverted(tmp_path: Path, kind: str) -> None:
    """read_i420 yields what read_frames yields, in the source's YUV, cropped to even sizes."""
    if kind == "still":
        path = tmp_path / "still.png"
        cv2.imwrite(str(path), pattern(3, 65, 49))
    else:
        path = make_video(tmp_path / "v.mp4", 6, size=(161, 121) if kind == "odd 4:4:4" else (64, 48),
                          rotation=-90 if kind == "rotated" else None,
                          pix_fmt="yuv444p" if kind == "odd 4:4:4" else "yuv420p")
    info = probe(path)
    schedule = [0] if kind == "still" else [5, 1]
    for bgr, yuv in zip(read_frames(path, info, schedule), read_i420(path, info, schedule)):
        assert isinstance(yuv, I420)
        assert (yuv.width, yuv.height) == (info.width - info.width % 2, info.height - info.height % 2)
        as_bgr = bgr[:yuv.height, :yuv.width]
        if kind != "still":  # the still's BGR → YUV goes through BT.709, the rest is BT.601 here
            back = cv2.cvtColor(yuv.data, cv2.COLOR_YUV2BGR_I420)
            assert np.abs(back.astype(int) - as_bgr).mean() < 6
        expected = cv2.cvtColor(as_bgr, cv2.COLOR_BGR2GRAY)
        assert index_of(np.repeat(yuv.y[..., None], 3, 2)) == index_of(np.repeat(expected[..., None], 3, 2))


def test_vfr_is_resampled_by_timestamp(tmp_path: Path) -> None:
    # A 25 fps grid (ms) with an extra frame at 60 and none at 120: 20 frames in 0.8 s.
    times = [0, 40, 60, 80] + list(range(160, 800, 40))
    path = make_video(tmp_path / "vfr.mp4", len(times), pts=times, time_base=Fraction(1, 1000))
    info = probe(path)
    assert (info.fps, info.frame_count) == (25.0, 20)
    expected = [max(k for k, t in enumerate(times) if t < (i + 0.5) * 1000 / info.fps)
                for i in range(info.frame_count)]
    assert indices_read(path, list(range(info.frame_count))) == expected
    assert 2 not in expected and expected.count(3) > 1  # one frame dropped, one held


def test_still_png_and_exif_rotated_jpeg(tmp_path: Path) -> None:
    png = tmp_path / "face.png"
    cv2.imwrite(str(png), pattern(7))
    info = probe(png)
    assert (info.is_still, info.frame_count, info.fps, info.width, info.height) == (True, 1, 25.0, 64, 48)
    frames = list(read_frames(png, info, [0, 0, 0]))
    assert [index_of(f) for f in frames] == [7, 7, 7]
    frames[0][:] = 0  # each yielded still is the caller's own copy
    assert index_of(frames[1]) == 7

    jpeg = tmp_path / "phone.jpg"
    jpeg.write_bytes(_with_exif_orientation(cv2.imencode(".jpg", pattern(9), [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes(), 6))
    info = probe(jpeg, still_fps=30)
    assert (info.width, info.height, info.fps) == (48, 64, 30.0)
    (frame,) = read_frames(jpeg, info, [0])
    assert index_of(cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)) == 9


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag after the SOI marker."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize("content", ["random", "empty", "audio", "missing", "bad_image"])
def test_unusable_files_raise_video_error(tmp_path: Path, clip: Path, content: str) -> None:
    path = tmp_path / "input.mp4"
    if content == "random":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "audio":
        path = make_audio(tmp_path / "speech.wav", 0.5)
    elif content == "bad_image":
        path = tmp_path / "face.jpg"
        path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoError) as caught:
        probe(path)
    assert path.name in str(caught.value)


def test_half_a_file_is_incomplete_not_damaged(tmp_path: Path, clip: Path) -> None:
    """moov is written last without faststart: half a file has none, and its mdat box says how
    much is missing (more cases in tests/test_incomplete_input.py)."""
    path = tmp_path / "input.mp4"
    path.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(IncompleteInputError, match="'input.mp4' looks incomplete"):
        probe(path)


# --- read_frames schedules ------------------------------------------------------------------------

@pytest.mark.parametrize("chunk", [64, 7])
def test_reverse_run_across_chunks(clip: Path, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video_in, "MAX_HELD_FRAMES", chunk)
    schedule = list(range(99, -1, -1))  # 100 frames: held 64 or 7 at a time
    assert indices_read(clip, schedule) == schedule


def test_pingpong_and_loop_schedules_return_the_scheduled_frames(clip: Path) -> None:
    for mode in ("pingpong", "loop"):
        schedule = frame_schedule(100, 260, mode)
        assert indices_read(clip, schedule) == schedule


def test_arbitrary_jumps(clip: Path) -> None:
    schedule = [50, 51, 10, 99, 98, 97, 3, 3, 4, 70, 0]
    assert indices_read(clip, schedule) == schedule


def test_index_outside_the_video_is_an_error(clip: Path) -> None:
    with pytest.raises(IndexError):
        list(read_frames(clip, probe(clip), [100]))


def test_reverse_reading_a_long_video_keeps_memory_bounded(tmp_path: Path) -> None:
    """3000 frames of 160×120 are 173 MB as BGR; reading them backwards must hold a chunk only."""
    path = make_video(tmp_path / "long.mp4", 3000, size=(160, 120), gop=30)
    info = probe(path)
    baseline = _rss_bytes()
    peak, count, previous = baseline, 0, None
    for frame in read_frames(path, info, range(info.frame_count - 1, -1, -1)):
        if count % 50 == 0:
            peak = max(peak, _rss_bytes())
            assert index_of(frame) == info.frame_count - 1 - count
        previous, count = frame, count + 1
    assert count == 3000 and previous is not None
    decoded = 3000 * 160 * 120 * 3
    assert peak - baseline < decoded // 5, f"grew {(peak - baseline) / 2**20:.1f} MiB"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# --- frame_schedule -------------------------------------------------------------------------------

def test_frame_schedule_trims_pingpongs_and_loops() -> None:
    assert frame_schedule(5, 3, "pingpong") == [0, 1, 2]
    assert frame_schedule(4, 11, "pingpong") == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert frame_schedule(3, 7, "loop") == [0, 1, 2, 0, 1, 2, 0]
    assert frame_schedule(1, 3, "pingpong") == [0, 0, 0]
    assert frame_schedule(2, 5, "pingpong") == [0, 1, 0, 1, 0]
    assert frame_schedule(3, 0, "loop") == []
    with pytest.raises(ValueError, match="mode"):
        frame_schedule(3, 5, "bounce")
    with pytest.raises(ValueError, match="frame_count"):
        frame_schedule(0, 5, "loop")


# --- VideoWriter ----------------------------------------------------------------------------------

def test_writer_output_matches_the_audio(tmp_path: Path, clip: Path) -> None:
    audio = make_audio(tmp_path / "speech.wav", 2.0, rate=44100, channels=2)
    out = tmp_path / "out.mp4"
    source = probe(clip)
    frames = round(1.2 * source.fps)
    with VideoWriter(out, source.width, source.height, source.fps, color=source.color,
                     audio_path=audio, audio_duration_s=1.2) as writer:
        for frame in read_frames(clip, source, range(frames)):
            writer.write(frame)
    info = probe(out)
    assert (info.width, info.height, info.fps, info.frame_count) == (64, 48, 25.0, frames)
    assert indices_read(out, list(range(frames))) == list(range(frames))
    with av.open(str(out)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.profile, video.codec_context.pix_fmt) == ("h264", "High", "yuv420p")
        assert (sound.codec_context.name, sound.rate, sound.channels) == ("aac", 44100, 2)
        assert float(sound.duration * sound.time_base) == pytest.approx(1.2, abs=1 / 25)
        assert float(video.duration * video.time_base) == pytest.approx(1.2, abs=1 / 25)
    head = out.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat")  # +faststart


def test_writer_mono_audio_stays_mono_and_short_audio_is_not_padded(tmp_path: Path) -> None:
    audio = make_audio(tmp_path / "speech.wav", 0.6)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 64, 48, 25.0, audio_path=audio) as writer:
        for i in range(15):
            writer.write(pattern(i))
    with av.open(str(out)) as container:
        sound = container.streams.audio[0]
        assert (sound.rate, sound.channels) == (16000, 1)
        assert float(sound.duration * sound.time_base) == pytest.approx(0.6, abs=1 / 25)


def test_writer_crops_odd_sizes_to_even(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 161, 121, 30000 / 1001) as writer:
        for i in range(3):
            writer.write(pattern(i, 161, 121))
    info = probe(out)
    assert (info.width, info.height, info.frame_count) == (160, 120, 3)
    assert info.fps == pytest.approx(29.97, abs=0.001)
    assert [index_of(f) for f in read_frames(out, info, [0, 1, 2])] == [0, 1, 2]


PATCHES = {"grey": (128, 128, 128), "red": (0, 0, 255), "green": (0, 200, 0), "blue": (230, 40, 20),
           "skin": (120, 160, 220)}


@pytest.mark.parametrize("tags, luma_of_red", [
    (ColorTags(1, 1, 1, 1), 16 + 219 * 0.2126),   # BT.709, as the HD clips in shared/media
    (ColorTags(), 16 + 219 * 0.299),             # untagged source: BT.601, tagged as such
])
def test_writer_colours_round_trip_and_match_the_tags(tmp_path: Path, tags: ColorTags,
                                                      luma_of_red: float) -> None:
    image = np.zeros((48, 80, 3), np.uint8)
    for k, bgr in enumerate(PATCHES.values()):
        image[:, k * 16:(k + 1) * 16] = bgr
    out = tmp_path / "colours.mp4"
    with VideoWriter(out, 80, 48, 25.0, color=tags) as writer:
        for _ in range(3):
            writer.write(image)
    info = probe(out)
    assert info.colorspace == (tags.space or 6) and info.color_range == 1
    (decoded,) = read_frames(out, info, [1])
    for k, bgr in enumerate(PATCHES.values()):
        patch = decoded[16:32, k * 16 + 4:(k + 1) * 16 - 4].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - bgr).max() < 4, (k, patch, bgr)
    with av.open(str(out)) as container:  # the stored Y of pure red tells which matrix was used
        luma = next(container.decode(video=0)).to_ndarray()[:48]
    assert luma[16:32, 20:28].mean() == pytest.approx(luma_of_red, abs=2)


def test_writer_deletes_the_partial_file_on_error(tmp_path: Path) -> None:
    out = tmp_path / "partial.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, 64, 48, 25.0) as writer:
            for i in range(5):
                writer.write(pattern(i))
            raise RuntimeError("boom")
    assert not out.exists()


def test_writer_rejects_a_frame_of_the_wrong_size(tmp_path: Path) -> None:
    out = tmp_path / "wrong.mp4"
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(out, 64, 48, 25.0) as writer:
            writer.write(pattern(0, 32, 24))
    assert not out.exists()
