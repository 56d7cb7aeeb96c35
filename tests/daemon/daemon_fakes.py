"""A stand-in for the lip-sync engine with the same interface, driven by the input files' bytes.

Its behaviour is chosen by what a test writes into a video file, so the same fake works in
process and in the subprocess harness: ``noface`` in a video raises NoFaceError, ``broken``
raises VideoError, ``incomplete`` raises IncompleteInputError (a file still being copied),
``stuck`` stops after its first frame without reporting or checking ``should_stop`` again (a
hung driver call), ``torchbusy`` keeps torch's threads multiplying matrices for
``TORCH_BUSY_S`` seconds without ever calling ``should_stop`` (a CPU network batch that cannot
be interrupted), anything else renders ``FRAMES`` frames (sleeping ``frame_delay`` each),
with a face in one of them when the video contains ``fewfaces``, else in all.
An audio file containing ``silence`` raises AudioError. The audio is a real
:class:`SpeechAudio` (its samples are the file's bytes), so it crosses into worker processes
the way the real engine's does.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from lipsyncd.engine import (
    AudioError,
    Cancelled,
    IncompleteInputError,
    ModelError,
    NoFaceError,
    Progress,
    RenderOptions,
    RenderResult,
    VideoError,
)
from lipsyncd.engine.audio import SpeechAudio
from lipsyncd.engine.preview import Preview

FRAMES = 10
TORCH_BUSY_S = 60.0


class FakeEngine:
    def __init__(self, models_dir: Path | None = None, frame_delay: float = 0.0,
                 on_frame: Callable[[int], None] | None = None, stamp_env: str | None = None) -> None:
        self.models_dir = models_dir
        self.frame_delay = frame_delay
        self.stamp_env = stamp_env
        """An environment variable whose value heads each output (which GPU a worker was given)."""
        self.on_frame = on_frame
        self.rendered: list[str] = []
        self.digests: list[str | None] = []
        self.previewed: list[str] = []

    def check_ready(self, options: RenderOptions) -> None:
        if self.models_dir is not None and not (self.models_dir / f"{options.checkpoint}.pth").is_file():
            raise ModelError(f"put {options.checkpoint}.pth in {self.models_dir} "
                             f"or run lipsyncd models fetch {options.checkpoint}")

    def load_audio(self, path: Path, options=None) -> SpeechAudio:
        data = path.read_bytes()
        if b"silence" in data:
            raise AudioError("the audio is silent")
        return SpeechAudio(str(path), np.frombuffer(data, np.uint8).astype(np.float32), np.zeros((80, 16), np.float32))

    def audio_head(self, audio: SpeechAudio, seconds: float) -> SpeechAudio:
        """The fake's audio lasts ``len(audio.samples) / 100`` seconds (see :meth:`preview`)."""
        return dataclasses.replace(audio, samples=audio.samples[: round(seconds * 100)])

    def preview(self, audio: SpeechAudio, video: Path, image: Path, options: RenderOptions,
                progress: Callable[[Progress], None] | None = None,
                should_stop: Callable[[], bool] | None = None, video_digest: str | None = None) -> Preview:
        """A drawn stand-in picture (grey frame, green face box, red mouth region); fails like render."""
        data = video.read_bytes()
        if b"broken" in data:
            raise VideoError(f"{video.name} cannot be decoded.")
        picture = np.full((120, 96, 3), 90, np.uint8)
        cv2.rectangle(picture, (18, 20), (78, 100), (0, 200, 0), 2)
        picture[70:96, 24:72] = (40, 40, 220)
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), picture)
        self.previewed.append(video.name)
        with_face = 0 if b"noface" in data else FRAMES
        return Preview(str(image), FRAMES, with_face, FRAMES / 25, len(audio.samples) / 100, "trim",
                       f"{video.name}: a face in {with_face} of {FRAMES} frames")

    def render(self, audio: SpeechAudio, video: Path, output: Path, options: RenderOptions,
               progress: Callable[[Progress], None] | None = None,
               should_stop: Callable[[], bool] | None = None, video_digest: str | None = None) -> RenderResult:
        data = video.read_bytes()
        self.digests.append(video_digest)
        if b"noface" in data:
            raise NoFaceError(f"No face was found in {video.name}.")
        if b"broken" in data:
            raise VideoError(f"{video.name} cannot be decoded.")
        if b"incomplete" in data:
            raise IncompleteInputError(video.name, "it ends after 40 % of the length its header states")
        if b"torchbusy" in data:
            _keep_torch_busy(TORCH_BUSY_S, progress)
        for frame in range(1, FRAMES + 1):
            if b"stuck" in data and frame == 2:
                time.sleep(3600)
            if should_stop is not None and should_stop():
                raise Cancelled("stopped")
            time.sleep(self.frame_delay)
            if self.on_frame is not None:
                self.on_frame(frame)
            if progress is not None:
                progress(Progress(frame, FRAMES))
        tmp = output.with_name(f".{output.name}.tmp")
        stamp = f"{self.stamp_env}={os.environ.get(self.stamp_env)}\n".encode() if self.stamp_env else b""
        tmp.write_bytes(stamp + b"LIPSYNCED " + audio.samples.astype(np.uint8).tobytes()[:16] + b" + " + data)
        os.replace(tmp, output)
        self.rendered.append(video.name)
        faces = 1 if b"fewfaces" in data else FRAMES
        return RenderResult(str(output), FRAMES, 25.0, FRAMES / 25, 64, 64, faces, 0.01)


def _keep_torch_busy(seconds: float, progress: Callable[[Progress], None] | None) -> None:
    import torch

    a = torch.rand(1024, 1024)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        a = torch.nn.functional.normalize(a @ a, dim=1)  # intra-op threads busy, no stop check
        if progress is not None:
            progress(Progress(1, FRAMES))
