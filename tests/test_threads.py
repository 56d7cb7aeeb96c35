"""Each stage of a render runs on the threads its plan gives it, and the settings are restored
after: torch's intra-op threads in the network workers and the face pass, OpenCV's own pool in
the crop and paste and in the face pass (OpenCV would otherwise split every small resize over
every core while the paste pool already runs frames side by side)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
from media_tools import write_wav

from lipsyncd.engine import LipSyncEngine, RenderOptions, blend, pipeline
from lipsyncd.engine.audio import SAMPLE_RATE, decode_audio
from lipsyncd.engine.faces import track
from lipsyncd.engine.infer import MouthGenerator
from lipsyncd.engine.threads import ThreadPlan, opencv_threads


def test_plans_give_opencv_one_thread_and_a_cpu_one_network_worker_per_core() -> None:
    cpu = ThreadPlan.for_device("cpu", cores=4)
    assert (cpu.network_workers, cpu.network, cpu.faces, cpu.opencv, cpu.encoder) == (4, 1, 1, 1, 4)
    gpu = ThreadPlan.for_device("cuda", cores=16)
    assert (gpu.network_workers, gpu.opencv, gpu.encoder, gpu.blend) == (1, 1, 0, 8)


def test_opencv_threads_sets_and_restores() -> None:
    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError), opencv_threads(1):
        raise RuntimeError
    assert cv2.getNumThreads() == before


@pytest.mark.slow
def test_a_render_runs_each_stage_on_its_planned_threads(models_dir: Path, face_clip: Path, speech_file: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, set[tuple[int, int]]] = {"paste": set(), "network": set(), "faces": set()}

    def threads() -> tuple[int, int]:
        return cv2.getNumThreads(), torch.get_num_threads()

    paste, analyse = blend.paste, track.analyse
    monkeypatch.setattr(MouthGenerator, "__call__",
                        lambda self, crops, mels, rows=None, row=0: seen["network"].add(threads()) or crops)  # type: ignore[func-returns-value]
    monkeypatch.setattr(pipeline, "paste", lambda *a: seen["paste"].add(threads()) or paste(*a))  # type: ignore[func-returns-value]

    def observed_analyse(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen["faces"].add(threads())
        return analyse(*args, **kwargs)

    monkeypatch.setattr("lipsyncd.engine.engine.analyse", observed_analyse)
    plan = ThreadPlan(faces=1, network=1, network_workers=2, blend=2, encoder=1, opencv=1)
    engine = LipSyncEngine(models_dir, device="cpu", threads=plan)
    audio = engine.load_audio(write_wav(tmp_path / "s.wav", decode_audio(speech_file)[: int(0.4 * SAMPLE_RATE)]))
    original = cv2.getNumThreads()
    cv2.setNumThreads(2)
    before_torch = torch.get_num_threads()
    try:
        engine.render(audio, face_clip, tmp_path / "out.mp4", RenderOptions())
        after = (cv2.getNumThreads(), torch.get_num_threads())
    finally:
        cv2.setNumThreads(original)

    assert {opencv for opencv, _ in seen["paste"]} == {1}
    assert seen["network"] == {(1, 1)} and seen["faces"] == {(1, 1)}
    assert after == (2, before_torch)
