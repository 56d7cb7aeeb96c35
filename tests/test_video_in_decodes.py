"""How many pictures the decoder decodes for a schedule: a ping-pong render should decode each
source picture about once, not re-decode a keyframe interval for every backward block, and hand
out exactly the frames a plain forward read gives for those slots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_media import make_video

from lipsyncd.engine import video_in
from lipsyncd.engine.media import frame_schedule, probe, read_i420


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decodes")
    return {"gop 12": make_video(folder / "gop12.mp4", 100, gop=12),
            "one keyframe": make_video(folder / "gop250.mp4", 100, gop=250)}


def plain_read(path: Path, schedule: list[int]) -> list[np.ndarray]:
    """The reference: every picture decoded once, forward, then picked by the schedule."""
    info = probe(path)
    frames = [frame.data.copy() for frame in read_i420(path, info, range(info.frame_count))]
    return [frames[slot] for slot in schedule]


def read(path: Path, schedule: list[int]) -> list[np.ndarray]:
    return [frame.data for frame in read_i420(path, probe(path), schedule)]


@pytest.mark.parametrize("name", ["gop 12", "one keyframe"])
def test_a_pingpong_decodes_each_picture_about_once(videos: dict[str, Path], decoded: list[int], name: str) -> None:
    schedule = frame_schedule(100, 199, "pingpong")  # 0..99, 98..0: one whole cycle
    frames = read(videos[name], schedule)
    count = len(decoded)
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain_read(videos[name], schedule), strict=True))
    # 100 pictures, plus the decoder's one picture of look-ahead at the turn (before: 201 and
    # 237, the backward run in blocks of 64, each decoded again from its keyframe)
    assert count <= 102, count


@pytest.mark.parametrize("name", ["gop 12", "one keyframe"])
def test_long_audio_pingpongs_decode_about_one_picture_per_output_frame(videos: dict[str, Path],
                                                                      decoded: list[int], name: str) -> None:
    schedule = frame_schedule(100, 700, "pingpong")  # three and a half cycles
    frames = read(videos[name], schedule)
    count = len(decoded)
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain_read(videos[name], schedule), strict=True))
    # four ascending runs (0..99, then 1..99 three times) decoded once each; the descents are
    # handed out from the pictures the ascents kept (before: 719 and 911)
    assert count <= 4 * 100 + 4, count


def test_a_backward_read_decodes_each_keyframe_interval_once(videos: dict[str, Path], decoded: list[int]) -> None:
    schedule = list(range(99, -1, -1))
    frames = read(videos["gop 12"], schedule)
    count = len(decoded)
    assert all(np.array_equal(a, b) for a, b in zip(frames, plain_read(videos["gop 12"], schedule), strict=True))
    # each of the 9 intervals once, at most one picture of look-ahead past each (before: 137,
    # 64-frame blocks, each decoded from the keyframe before it)
    assert count <= 100 + 9, count


@pytest.mark.parametrize("limit", [1, 7])
def test_an_interval_longer_than_the_held_limit_still_reads_right(videos: dict[str, Path], decoded: list[int],
                                                                 monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """A keyframe interval too big to hold is handed out in blocks, each decoded from its keyframe."""
    monkeypatch.setattr(video_in, "MAX_HELD_FRAMES", limit)
    schedule = frame_schedule(100, 260, "pingpong")
    assert all(np.array_equal(a, b) for a, b in zip(read(videos["one keyframe"], schedule),
                                                    plain_read(videos["one keyframe"], schedule), strict=True))


def test_pictures_held_for_a_pingpong_stay_within_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One keyframe for 600 frames (79 MB decoded): a ping-pong over it holds at most the cap."""
    from test_media import _rss_bytes, index_of

    path = make_video(tmp_path / "one_gop.mp4", 600, size=(320, 240), gop=1000)
    monkeypatch.setattr(video_in, "MAX_HELD_BYTES", 8 * 2**20)  # 72 pictures of 320×240
    info = probe(path)
    schedule = frame_schedule(info.frame_count, 1300, "pingpong")
    baseline, peak = _rss_bytes(), 0
    for count, frame in enumerate(video_in.read_frames(path, info, schedule)):
        if count % 25 == 0:
            peak = max(peak, _rss_bytes())
            assert index_of(frame) == schedule[count]
    decoded_mb = 600 * 320 * 240 * 3 // 2
    assert peak - baseline < decoded_mb // 3, f"grew {(peak - baseline) / 2**20:.1f} MiB"


@pytest.mark.parametrize("limit", [3, 300])
def test_any_mix_of_runs_reads_the_scheduled_frames(videos: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                    limit: int) -> None:
    """Ascents, descents of every length, jumps and repeats, in a fixed random order."""
    monkeypatch.setattr(video_in, "MAX_HELD_FRAMES", limit)
    rng = np.random.default_rng(7)
    schedule: list[int] = []
    for _ in range(40):
        start, length = int(rng.integers(0, 100)), int(rng.integers(1, 30))
        step = int(rng.choice([-1, 1, 0]))
        schedule += [min(99, max(0, start + step * k)) for k in range(length)]
    for name in ("gop 12", "one keyframe"):
        frames = read(videos[name], schedule)
        assert all(np.array_equal(a, b) for a, b in zip(frames, plain_read(videos[name], schedule), strict=True))


def test_a_variable_rate_video_pingpongs_to_the_frames_a_forward_read_gives(tmp_path: Path) -> None:
    """Slots showing one picture twice, or skipping one, come out backwards as forwards."""
    from fractions import Fraction

    times = [0, 40, 60, 80] + list(range(160, 800, 40)) + list(range(800, 2000, 33))
    path = make_video(tmp_path / "vfr.mp4", len(times), pts=times, time_base=Fraction(1, 1000), gop=7)
    info = probe(path)
    schedule = frame_schedule(info.frame_count, 3 * info.frame_count, "pingpong")
    assert all(np.array_equal(a, b) for a, b in zip(read(path, schedule), plain_read(path, schedule), strict=True))
