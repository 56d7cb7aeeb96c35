"""Progress arithmetic: per-stage speed, ETAs of a video, a job and the queue, ISO times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from lipsyncd.daemon import progress as pr

T0 = datetime(2026, 3, 1, 14, 0, 0, tzinfo=timezone.utc)


def test_speed_is_measured_per_stage_and_the_eta_uses_the_render_speed():
    meter = pr.VideoMeter()
    first = meter.update("faces", 0, 400, now=0.0)
    assert (first.fps, first.eta_s) == (None, None)  # nothing measured yet: no made-up number
    faces = meter.update("faces", 100, 400, now=2.0)
    assert faces.fps == pytest.approx(50.0) and faces.eta_s is None  # no render speed known yet
    meter.update("render", 100, 400, now=2.5)
    render = meter.update("render", 120, 400, now=4.5)  # 20 frames in 2 s
    assert render.stage == "render" and render.fps == pytest.approx(10.0)
    assert render.eta_s == pytest.approx(28.0)  # 280 frames at 10 fps
    assert render.fraction == pytest.approx(0.3)


def test_a_hint_from_earlier_videos_gives_an_eta_during_face_analysis():
    meter = pr.VideoMeter(render_fps_hint=4.0)
    snap = meter.update("faces", 0, 200, now=0.0)
    assert snap.eta_s == pytest.approx(50.0)


def test_old_samples_leave_the_window_so_a_slowdown_shows():
    meter = pr.VideoMeter(window_s=5.0)
    for second in range(0, 11):  # 10 fps for 10 s
        meter.update("render", 10 * second, 1000, now=float(second))
    for second in range(11, 21):  # then 2 fps
        snap = meter.update("render", 100 + 2 * (second - 10), 1000, now=float(second))
    assert snap.fps == pytest.approx(2.0, rel=0.05)


def test_a_finished_video_has_no_time_left():
    meter = pr.VideoMeter()
    assert meter.update("render", 50, 50, now=0.0).eta_s == 0.0


def test_the_eta_counts_down_between_writes():
    assert pr.remaining_now(30.0, T0, T0 + timedelta(seconds=12)) == pytest.approx(18.0)
    assert pr.remaining_now(30.0, T0, T0 + timedelta(seconds=99)) == 0.0
    assert pr.remaining_now(None, T0, T0) is None


def test_job_eta_uses_finished_videos_else_the_current_projection():
    now = [pr.RunningVideo(eta_s=10.0, elapsed_s=20.0)]
    assert pr.job_eta(now, [], 0) == 10.0
    assert pr.job_eta(now, [], 2) == pytest.approx(10.0 + 2 * 30.0)
    assert pr.job_eta(now, [40.0, 60.0], 2) == pytest.approx(10.0 + 2 * 50.0)
    assert pr.job_eta([pr.RunningVideo(None, 20.0)], [], 1) is None  # nothing known at all


def test_a_video_without_its_own_eta_yet_is_assumed_to_take_a_typical_time():
    assert pr.job_eta([pr.RunningVideo(None, 5.0)], [40.0], 1) == pytest.approx(35.0 + 40.0)  # its videos took 40 s
    assert pr.job_eta([pr.RunningVideo(None, 5.0)], [], 2, typical_video_s=30.0) == pytest.approx(25.0 + 60.0)
    assert pr.job_eta([pr.RunningVideo(None, 50.0)], [], 0, typical_video_s=30.0) == 0.0  # overdue: never negative
    assert pr.job_eta([], [20.0], 2) == pytest.approx(40.0)  # between two videos
    assert pr.job_eta([], [], 2, typical_video_s=30.0) == pytest.approx(60.0)
    assert pr.job_eta([], [], 2) is None


def test_a_job_s_videos_spread_over_the_slots_as_the_runner_hands_them_out():
    # 5 videos of 60 s: one slot renders them one after the other, two slots three rounds deep
    assert pr.on_slots([], 5, 60.0, slots=1) == 300.0
    assert pr.on_slots([], 5, 60.0, slots=2) == 180.0  # the fifth runs alone: a slot waits
    assert pr.on_slots([], 4, 60.0, slots=8) == 60.0
    # two videos running (10 s and 50 s left), three more: each goes to the slot free first
    assert pr.on_slots([10.0, 50.0], 3, 60.0, slots=2) == 130.0  # 10+60, 50+60, 70+60
    assert pr.on_slots([10.0], 1, 60.0, slots=2) == 60.0  # the idle slot takes it now
    assert pr.on_slots([10.0, 50.0], 0, None, slots=2) == 50.0  # the last running video ends
    assert pr.on_slots([10.0], 1, None, slots=2) is None
    running = [pr.RunningVideo(10.0, 50.0), pr.RunningVideo(50.0, 10.0)]
    assert pr.job_eta(running, [], 3, slots=2) == 130.0  # projected: 60 s a video
    assert pr.job_eta(running, [], 3, slots=1) == 130.0  # a stale slot count: at least as many as render now


def test_a_preview_is_timed_at_its_own_speed():
    meter = pr.VideoMeter(render_fps_hint=2.0)
    meter.update("preview", 0, 300, now=0.0)
    snap = meter.update("preview", 100, 300, now=1.0)
    assert snap.fps == pytest.approx(100.0) and snap.eta_s == pytest.approx(2.0)


def test_expected_starts_follow_the_queue():
    starts = pr.expected_starts(T0, 60.0, [2, 1, 3], seconds_per_video=30.0, running=True)
    assert starts == [T0 + timedelta(seconds=60), T0 + timedelta(seconds=120), T0 + timedelta(seconds=150)]
    idle = pr.expected_starts(T0, None, [1, 1], seconds_per_video=30.0, running=False)
    assert idle == [T0, T0 + timedelta(seconds=30)]


def test_with_two_slots_each_waiting_job_takes_its_videos_two_at_a_time():
    waiting = [2, 3, 1, 1]
    one = pr.expected_starts(T0, 60.0, waiting, seconds_per_video=30.0, running=True, slots=1)
    two = pr.expected_starts(T0, 60.0, waiting, seconds_per_video=30.0, running=True, slots=2)
    assert [(s - T0).total_seconds() for s in one] == [60, 120, 210, 240]
    assert [(s - T0).total_seconds() for s in two] == [60, 90, 150, 180]  # 3 videos: two rounds of 30 s


def test_an_unknown_estimate_makes_the_later_starts_unknown():
    assert pr.expected_starts(T0, None, [1, 1], 30.0, running=True) == [None, None]
    assert pr.expected_starts(T0, 10.0, [1, 1], None, running=True) == [T0 + timedelta(seconds=10), None]
    assert pr.mean_seconds_per_video([]) is None
    assert pr.mean_seconds_per_video([10.0, 20.0]) == 15.0


def test_times_are_iso_8601_with_a_zone():
    assert pr.iso("2026-03-01 14:05:09") == "2026-03-01T14:05:09+00:00"
    assert pr.iso("2026-03-01T14:05:09+00:00") == "2026-03-01T14:05:09+00:00"
    later = datetime(2026, 3, 1, 16, 5, 9, 400000, tzinfo=timezone(timedelta(hours=2)))
    assert pr.iso(later) == "2026-03-01T14:05:09+00:00"
    assert pr.iso(later + timedelta(milliseconds=200)) == "2026-03-01T14:05:10+00:00"  # the nearest second
    assert pr.iso(None) is None


@pytest.mark.parametrize("seconds, text", [(None, "unknown"), (4.4, "4 s"), (65, "1 min 05 s"),
                                           (7380, "2 h 03 min")])
def test_durations_read_like_a_person_writes_them(seconds, text):
    assert pr.format_duration(seconds) == text
