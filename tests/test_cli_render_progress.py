"""`lipsyncd render`'s progress bar: one bar over faces then frames, speed and ETA per stage."""

from __future__ import annotations

import pytest
from lipsyncd.engine.cli_render import RenderMeter, progress_bar
from lipsyncd.engine.options import Progress


def faces_then_render() -> RenderMeter:
    """500 source frames analysed at 32 fps, then 250 frames rendered in batches of 30."""
    meter = RenderMeter(faces_frames=500)
    for k in range(16):
        meter.update("faces", 32 * (k + 1), 750, now=float(k))
    meter.update("faces", 500, 750, now=15.6)
    return meter


def test_the_face_analysis_is_timed_on_its_own():
    meter = RenderMeter(faces_frames=500)
    meter.update("faces", 32, 750, now=0.0)
    assert meter.fps() is None and meter.describe(0.0) == "32/500 frames  measuring speed  faces done in unknown"
    meter.update("faces", 64, 750, now=1.0)
    assert meter.fps() == 32.0
    assert meter.seconds_left(1.0) == pytest.approx((500 - 64) / 32)
    assert meter.describe(1.0) == "64/500 frames  32.0 fps  faces done in 0:00:14"


def test_the_render_is_timed_from_the_end_of_the_faces_at_its_own_speed():
    meter = faces_then_render()
    meter.update("render", 530, 750, now=25.6)  # the first batch took 10 s
    assert meter.stage == "render" and meter.fps() == pytest.approx(3.0)
    assert meter.seconds_left(25.6) == pytest.approx(220 / 3.0)  # not the 32 fps of the faces
    assert meter.describe(25.6) == "30/250 frames  3.0 fps  ETA 0:01:13"


def test_between_callbacks_the_bar_moves_on_but_never_past_the_batch_in_progress():
    meter = faces_then_render()
    meter.update("render", 530, 750, now=25.6)
    assert meter.position(25.6) == 530
    assert meter.position(30.6) == pytest.approx(545)  # 5 s at 3 fps
    assert meter.position(60.0) == 560  # the batch of 30 in progress ends there
    assert meter.seconds_left(30.6) == pytest.approx(205 / 3.0)  # the ETA counts down meanwhile
    meter.update("render", 740, 750, now=95.0)
    assert meter.position(200.0) == 750  # the last batch ends at the end


def test_a_cached_face_track_starts_with_the_render():
    meter = RenderMeter(faces_frames=500)
    meter.update("render", 30, 250, now=5.0)
    assert meter.describe(5.0) == "30/250 frames  measuring speed  ETA unknown"
    meter.update("render", 60, 250, now=15.0)
    assert meter.fps() == pytest.approx(3.0) and meter.seconds_left(15.0) == pytest.approx(190 / 3.0)


def test_the_bar_is_labelled_by_stage(capsys):
    meter = RenderMeter(faces_frames=4)
    with progress_bar(meter) as show:
        for done, stage in ((2, "faces"), (4, "faces"), (6, "render"), (8, "render")):
            show(Progress(done, 8, stage))
    assert capsys.readouterr().err.split() == ["faces", "render"]  # not a terminal: each label once
    assert (meter.stage, meter.done, meter.total) == ("render", 8, 8)
