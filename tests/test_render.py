"""End to end through the engine: real face video + real speech → lip-synced video.

Weights come from the conformance rule, so the mouth the network draws is not a real mouth,
but every other property of the result is the product's: length, size, rate, audio, where
pixels change and where they must not.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lipsyncd.engine import LipSyncEngine, NoFaceError, RenderOptions, infer, media, pipeline
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.blend import crop_rect
from lipsyncd.engine.faces.detector import FaceDetector
from lipsyncd.engine.faces.track import FaceTrack
from lipsyncd.engine.infer import MouthGenerator
from media_tools import PeakRss, write_wav

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(models_dir: Path, tmp_path_factory) -> LipSyncEngine:
    return LipSyncEngine(models_dir, device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def gap_clip(face_clip: Path, tmp_path_factory) -> Path:
    """The face clip with frames 18..29 replaced by a plain wall: a segment with no face."""
    info = media.probe(face_clip)
    path = tmp_path_factory.mktemp("gap") / "gap clip ü.mp4"
    with media.VideoWriter(path, info.width, info.height, info.fps, crf=12) as writer:
        for i, frame in enumerate(media.read_frames(face_clip, info, range(info.frame_count))):
            writer.write(np.full_like(frame, 120) if 18 <= i < 30 else frame)
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    info = media.probe(path)
    return list(media.read_frames(path, info, range(info.frame_count)))


def test_render_keeps_everything_but_the_mouth(engine, gap_clip, speech_file, tmp_path):
    speech = decode_audio(speech_file)[: int(2.6 * SAMPLE_RATE)]  # longer than the 2 s clip: ping-pong
    audio = engine.load_audio(write_wav(tmp_path / "speech.wav", speech))
    out = tmp_path / "out.mp4"
    seen = []
    result = engine.render(audio, gap_clip, out, RenderOptions(batch_size=16), progress=seen.append)

    src_info, out_info = media.probe(gap_clip), media.probe(out)
    assert (out_info.width, out_info.height, out_info.fps) == (src_info.width, src_info.height, src_info.fps)
    assert abs(out_info.frame_count - audio.frame_count(src_info.fps)) <= 1
    assert abs(out_info.duration_s - audio.duration_s) <= 1 / src_info.fps + 1e-6
    assert result.frames == audio.frame_count(src_info.fps)
    assert [p.stage for p in seen][-1] == "render" and seen[-1].frames_done == seen[-1].frames_total
    assert {p.stage for p in seen} == {"faces", "render"} and len({p.frames_total for p in seen}) == 1
    assert [p.frames_done for p in seen] == sorted(p.frames_done for p in seen)  # one scale, never back
    assert not list(tmp_path.glob(".*partial*")), "temporary output left behind"

    with av_open(out) as container:  # the new audio is muxed, as AAC, as long as the speech
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert abs(float(stream.duration * stream.time_base) - audio.duration_s) < 0.05

    source, rendered = decode_all(gap_clip), decode_all(out)
    schedule = media.frame_schedule(len(source), len(rendered), "pingpong")
    # Encoder noise, measured: the same frames through the same encoder with no lip-sync.
    with media.VideoWriter(tmp_path / "noise.mp4", src_info.width, src_info.height, src_info.fps) as writer:
        for s in schedule:
            writer.write(source[s])
    reencoded = decode_all(tmp_path / "noise.mp4")
    detector = FaceDetector("cpu")
    for i in (5, 40, 55):  # face frames, forwards and on the way back
        src, dst = source[schedule[i]], rendered[i]
        (face,) = detector.detect([src])[0:1]
        mx, my = (int(v) for v in face[0].keypoints[3])  # mouth centre, found independently of the engine
        diff = np.abs(src.astype(int) - dst.astype(int))
        noise = np.abs(src.astype(int) - reencoded[i].astype(int))
        assert diff[my - 8:my + 8, mx - 12:mx + 12].mean() > 8, f"frame {i}: mouth unchanged"
        eyes_up = int(face[0].keypoints[:2, 1].max())
        x0, _, x1, _ = face[0].box
        away = (np.s_[:eyes_up], np.s_[:, : int(x0) - 10], np.s_[:, int(x1) + 10:])
        for region in away:  # eyes and above, left and right of the face: encoder noise only
            assert diff[region].mean() < noise[region].mean() + 0.5, f"frame {i}: picture away from the mouth changed"
    for i in range(20, 28):  # the wall: no face, passed through (one encoder generation, like the noise)
        assert np.abs(reencoded[i].astype(int) - rendered[i].astype(int)).max() <= 1
    assert result.frames_with_face == sum(1 for s in schedule if not 18 <= s < 30)


def test_a_sideways_clip_gets_its_mouth_redrawn_and_nothing_else(engine, face_clip, speech_file, tmp_path,
                                                                  monkeypatch):
    """A phone clip lying on its side: the face is found turned, the network sees it upright (as
    in the upright clip), and the mouth is pasted on the upright view, so it lands on the frame
    where the mouth is."""
    info = media.probe(face_clip)
    crops: dict[str, list[np.ndarray]] = {"upright": [], "sideways": []}
    seen = MouthGenerator.__call__
    upright = decode_all(face_clip)[:20]
    sideways = tmp_path / "sideways in.mp4"
    plain = tmp_path / "plain.mp4"  # the same frames through the encoder alone: its noise
    for path, crf in ((sideways, 12), (plain, 18)):
        with media.VideoWriter(path, info.height, info.width, info.fps, crf=crf) as writer:
            for frame in upright:
                writer.write(np.ascontiguousarray(np.rot90(frame, 1)))
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: int(0.8 * SAMPLE_RATE)]))
    for name, clip in (("upright", face_clip), ("sideways", sideways)):
        monkeypatch.setattr(MouthGenerator, "__call__",
                            lambda self, c, m, rows, row, name=name: crops[name].append(c.copy()) or seen(self, c, m, rows, row))
        result = engine.render(audio, clip, tmp_path / f"{name}.mp4", RenderOptions(batch_size=16))
        assert result.frames_with_face == result.frames == audio.frame_count(info.fps)
    upright_crops, sideways_crops = (np.concatenate(crops[k]).astype(int) for k in ("upright", "sideways"))
    assert len(upright_crops) == len(sideways_crops)
    # The network's workers run batches in parallel, so crops arrive in any order: each sideways
    # crop must have an upright twin (the same upright face, give or take the encoder).
    nearest = [min(np.abs(crop - other).mean() for other in upright_crops) for crop in sideways_crops]
    assert np.mean(nearest) < 8

    source = [np.rot90(f, -1) for f in decode_all(sideways)]  # stood upright again for the checks
    rendered = [np.rot90(f, -1) for f in decode_all(tmp_path / "sideways.mp4")]
    reencoded = [np.rot90(f, -1) for f in decode_all(plain)]
    (face,) = FaceDetector("cpu").detect([np.ascontiguousarray(upright[5])])[0:1]
    mx, my = (int(v) for v in face[0].keypoints[3])
    eyes_up = int(face[0].keypoints[:2, 1].max())
    for i in (5, 15):
        diff = np.abs(source[i].astype(int) - rendered[i].astype(int))
        noise = np.abs(source[i].astype(int) - reencoded[i].astype(int))
        assert diff[my - 8:my + 8, mx - 12:mx + 12].mean() > 8, f"frame {i}: mouth unchanged"
        assert diff[:eyes_up].mean() < noise[:eyes_up].mean() + 0.5, f"frame {i}: eyes and above changed"


def av_open(path: Path):
    import av

    return av.open(str(path))


def test_second_render_of_same_video_uses_cached_track(engine, face_clip, speech_file, tmp_path, monkeypatch):
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[:SAMPLE_RATE]))
    engine.render(audio, face_clip, tmp_path / "a.mp4", RenderOptions(batch_size=16))
    monkeypatch.setattr(FaceDetector, "detect", lambda *a: pytest.fail("detector ran on a cached video"))
    result = engine.render(audio, face_clip, tmp_path / "b.mp4", RenderOptions(batch_size=16))
    assert result.frames_with_face == result.frames


def test_drawing_only_the_rows_the_paste_reads_changes_no_pixel(engine, face_clip, speech_file, tmp_path,
                                                                 monkeypatch):
    """The network draws this clip's faces from the render's planned row down (the paste reads
    nothing above), and the video is the one whole faces give, bit for bit."""
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[:SAMPLE_RATE]))
    rows, run = [], MouthGenerator._run

    def recording(self, crops, mels, first_row):
        rows.append(first_row)
        return run(self, crops, mels, first_row)

    monkeypatch.setattr(MouthGenerator, "_run", recording)
    engine.render(audio, face_clip, tmp_path / "lower.mp4", RenderOptions())
    planned = set(rows)
    assert len(planned) == 1 and planned.pop() >= infer.LOWEST_ROW  # one row, the same for every batch
    rows.clear()
    monkeypatch.setattr(infer, "LOWEST_ROW", 97)  # no row qualifies: whole faces
    engine.render(audio, face_clip, tmp_path / "whole.mp4", RenderOptions())
    assert set(rows) == {0}
    lower, whole = decode_all(tmp_path / "lower.mp4"), decode_all(tmp_path / "whole.mp4")
    assert len(lower) == len(whole) == audio.frame_count(25.0)
    assert all(np.array_equal(a, b) for a, b in zip(lower, whole, strict=True))


def test_a_short_clip_ping_ponged_has_each_mask_drawn_once(engine, face_clip, speech_file, tmp_path, monkeypatch):
    """The row plan's masks serve the frames that show them: a 2 s clip ping-ponged to 5 s of
    speech draws each source frame's mask once, and the video is the one drawing every frame's
    mask again gives, bit for bit."""
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: 5 * SAMPLE_RATE]))
    info = media.probe(face_clip)
    engine.render(audio, face_clip, tmp_path / "warm-up.mp4", RenderOptions())  # the track, cached
    drawn: list[int] = []
    draw = pipeline.FrameLoop._draw_mask
    monkeypatch.setattr(pipeline.FrameLoop, "_draw_mask", lambda self, src: drawn.append(src) or draw(self, src))
    engine.render(audio, face_clip, tmp_path / "kept.mp4", RenderOptions())
    shown = set(media.frame_schedule(info.frame_count, audio.frame_count(info.fps), "pingpong"))
    assert audio.frame_count(info.fps) > 2 * len(shown)  # each frame is shown two or three times
    assert sorted(drawn) == sorted(shown)
    monkeypatch.setattr(pipeline.FrameLoop, "_mask", draw)  # every frame draws its own
    engine.render(audio, face_clip, tmp_path / "redrawn.mp4", RenderOptions())
    kept, redrawn = decode_all(tmp_path / "kept.mp4"), decode_all(tmp_path / "redrawn.mp4")
    assert len(kept) == len(redrawn) == audio.frame_count(info.fps)
    assert all(np.array_equal(a, b) for a, b in zip(kept, redrawn, strict=True))


def test_video_without_any_face_fails_clearly(engine, speech_file, tmp_path):
    path = tmp_path / "wall.mp4"
    with media.VideoWriter(path, 128, 96, 25.0) as writer:
        for i in range(10):
            writer.write(np.full((96, 128, 3), 90 + i, np.uint8))
    audio = engine.load_audio(speech_file)
    with pytest.raises(NoFaceError, match="No face was found"):
        engine.render(audio, path, tmp_path / "o.mp4")
    assert not list(tmp_path.glob("*o.*"))


def test_still_photo_becomes_video_of_audio_length(engine, face_clip, speech_file, tmp_path):
    photo = tmp_path / "portrait.png"
    cv2.imwrite(str(photo), decode_all(face_clip)[0][:, :255])  # odd width on purpose
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: SAMPLE_RATE]))
    out = engine.render(audio, photo, tmp_path / "still.mp4", RenderOptions(batch_size=16))
    info = media.probe(tmp_path / "still.mp4")
    assert info.frame_count == out.frames == audio.frame_count(25.0)
    assert (info.width, info.height) == (out.width, out.height) == (254, 256)  # 4:2:0 H.264 is even-sized


def test_memory_stays_flat_as_the_video_grows(engine, speech_file, tmp_path, monkeypatch):
    """Decode → blend → encode over 6× more frames must not need more memory.

    Face analysis and the network are replaced (a synthetic cached track, an identity generator),
    so the test isolates what grows with length: frames in flight between stages.
    """
    from lipsyncd.engine import engine as engine_module
    from test_blend import synthetic_points

    monkeypatch.setattr(engine_module.MouthGenerator, "__call__", lambda self, crops, mels, rows=None, row=0: crops[:, ::-1].copy())
    peaks = []
    for frames in (250, 1500):
        video = tmp_path / f"long_{frames}.mp4"
        with media.VideoWriter(video, 320, 240, 25.0, preset="ultrafast") as writer:
            for i in range(frames):
                writer.write(np.full((240, 320, 3), (i * 7) % 255, np.uint8))
        points = np.repeat(synthetic_points(160, 120, 50)[None], frames, 0)
        boxes = np.repeat(np.array([[110, 70, 210, 170]], np.float32), frames, 0)
        track = FaceTrack(boxes, points.astype(np.float32), np.ones(frames, np.float32))
        track.save(engine._track_cache_path(video, RenderOptions()))
        seconds = frames / 25.0
        rng = np.random.default_rng(0)
        audio = engine.load_audio(write_wav(tmp_path / f"a{frames}.wav",
                                            0.3 * rng.standard_normal(int(seconds * SAMPLE_RATE))))
        with PeakRss() as rss:
            engine.render(audio, video, tmp_path / f"o{frames}.mp4", RenderOptions(batch_size=32))
        peaks.append(rss.growth)
    decoded_long_video_mb = 1500 * 320 * 240 * 3 / 2**20  # 330 MB if frames piled up
    assert peaks[1] < peaks[0] + 0.15 * decoded_long_video_mb, peaks


def test_asking_for_a_gpu_that_is_not_there_is_a_clear_error(models_dir, monkeypatch):
    import torch

    from lipsyncd.engine import EngineError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError, match="device: cuda"):
        LipSyncEngine(models_dir, device="cuda")
    assert LipSyncEngine(models_dir, device="auto").device.type == "cpu"


def test_stop_request_cancels_soon_and_leaves_no_output(engine, face_clip, speech_file, tmp_path):
    from lipsyncd.engine import Cancelled

    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: 2 * SAMPLE_RATE]))
    seen = []
    with pytest.raises(Cancelled):
        engine.render(audio, face_clip, tmp_path / "stopped.mp4", RenderOptions(batch_size=8),
                      progress=seen.append, should_stop=lambda: any(p.stage == "render" for p in seen))
    assert [p.stage for p in seen].count("render") == 1  # stopped at the next batch
    assert list(tmp_path.iterdir()) == [tmp_path / "s.wav"]


def test_stop_request_is_seen_within_one_network_batch(engine, face_clip, speech_file, tmp_path, monkeypatch):
    """Cancel/stop must act within about a second on a CPU: no network batch starts after the
    flag is seen except those already handed to the other workers (one batch of wall time)."""
    from lipsyncd.engine import Cancelled

    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: 2 * SAMPLE_RATE]))
    engine.render(audio, face_clip, tmp_path / "warm.mp4", RenderOptions())  # the face track is cached now
    seen, before_flag, after_flag = [], [], []
    run = MouthGenerator._run

    def counting(self, crops, mels, first_row):
        (after_flag if seen else before_flag).append(len(crops))
        return run(self, crops, mels, first_row)

    monkeypatch.setattr(MouthGenerator, "_run", counting)
    with pytest.raises(Cancelled):
        engine.render(audio, face_clip, tmp_path / "stopped.mp4", RenderOptions(), progress=seen.append,
                      should_stop=lambda: bool(seen))  # flips at the first progress report
    batch, workers = engine._generator(RenderOptions()).batch_size, engine.threads.network_workers
    assert len(seen) == 1
    assert sum(before_flag) <= workers * batch < audio.frame_count(25.0), before_flag  # the first report came early
    assert sum(after_flag) <= max(1, workers - 1) * batch, after_flag


def test_progress_counts_encoded_frames_in_small_steps(engine, face_clip, speech_file, tmp_path):
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: 2 * SAMPLE_RATE]))
    seen = []
    result = engine.render(audio, face_clip, tmp_path / "o.mp4", RenderOptions(), progress=seen.append)
    analysed = seen[-1].frames_total - result.frames  # the face pass comes first on the same scale
    encoded = [p.frames_done - analysed for p in seen if p.stage == "render"]
    assert encoded == sorted(encoded) and encoded[0] >= 0 and encoded[-1] == result.frames
    batch = engine._generator(RenderOptions()).batch_size
    assert len(encoded) >= result.frames // batch  # one report per network batch, not per 128 frames
    assert max(np.diff([0, *encoded])) <= 4 * batch


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


@pytest.mark.parametrize("tags", [None, media.ColorTags(1, 1, 1, 1)], ids=["as-is", "bt709"])
def test_outside_the_mouth_is_as_good_as_a_plain_reencode(engine, face_clip, speech_file, tmp_path, tags):
    """Frames are never converted whole: outside the face crop the output must be within 0.5 dB
    of re-encoding the source's own YUV at the same settings (a round trip through BGR lost 1-3 dB)."""
    source = face_clip
    if tags is not None:  # the same pictures, stored as BT.709 (HD sources)
        source = tmp_path / "bt709.mp4"
        info = media.probe(face_clip)
        with media.VideoWriter(source, info.width, info.height, info.fps, crf=10, color=tags) as writer:
            for frame in media.read_frames(face_clip, info, range(info.frame_count)):
                writer.write(frame)
    info = media.probe(source)
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: SAMPLE_RATE // 2]))
    options = RenderOptions()
    engine.render(audio, source, tmp_path / "out.mp4", options)
    direct = tmp_path / "direct.mp4"
    with media.VideoWriter(direct, info.width, info.height, info.fps, crf=options.crf, preset=options.preset,
                           color=info.color) as writer:
        for frame in media.read_i420(source, info, range(audio.frame_count(info.fps))):
            writer.write(frame)
    track = FaceTrack.load(engine._track_cache_path(source, options))
    original, rendered, reencoded = decode_all(source), decode_all(tmp_path / "out.mp4"), decode_all(direct)
    outside = np.ones((len(rendered), info.height, info.width), bool)
    for i in range(len(rendered)):
        x0, y0, x1, y1 = crop_rect(track.boxes[i], options.pads, info.width, info.height)
        outside[i, y0:y1, x0:x1] = False
    src = np.stack(original[:len(rendered)])[outside]
    ours, plain = psnr(np.stack(rendered)[outside], src), psnr(np.stack(reencoded)[outside], src)
    assert ours >= plain - 0.5, (ours, plain)


def test_a_given_video_digest_keys_the_track_cache(engine, face_clip, tmp_path):
    """The daemon passes the sha256 it computed at intake: the cache key is that, not a re-read."""
    import hashlib

    digest = hashlib.sha256(face_clip.read_bytes()).hexdigest()
    assert engine._track_cache_path(face_clip, RenderOptions()) == \
        engine._track_cache_path(tmp_path / "not read.mp4", RenderOptions(), digest)
