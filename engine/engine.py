"""The engine's one public class: load models once, then render video after video.

Data path of :meth:`LipSyncEngine.render`, top to bottom::

    probe video ─▶ face track (cached by content) ─▶ frame schedule (trim / loop to the audio)
      ─▶ frame loop (:mod:`.pipeline`: decode ─▶ Wav2Lip ─▶ blend ─▶ encode, overlapped) ─▶ output

The engine knows nothing of folders, SQLite or systemd; it raises :mod:`.errors` whose messages
are meant for the person who dropped the job.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import torch

from . import media
from .audio import SpeechAudio, load_speech
from .errors import EngineError, NoFaceError
from .faces.fan import FanLocator, fan_weights_present
from .faces.locate import FaceLocator
from .faces.track import TRACK_VERSION, FaceTrack, analyse
from .infer import MouthGenerator
from .models import file_sha256, require_model
from .options import Progress, RenderOptions, RenderResult
from .pipeline import FrameLoop, ProgressFn, StageTimer, StopFn, check_stop, frames_per_chunk
from .preview import Preview, write_preview
from .stages import prefetch
from .wav2lip import load_wav2lip

log = logging.getLogger(__name__)

ANALYSIS_BATCH = 32
"""Frames per face-model batch: small models, so larger batches gain little on a GPU."""


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU; ``cuda`` without one is an error
    (a service configured for the GPU should not silently run a hundred times slower)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise EngineError("The GPU was asked for (device: cuda) but none is usable here: check nvidia-smi, "
                          "that torch is a CUDA build (lipsyncd doctor), or set engine.device to auto or cpu.")
    return torch.device(device)


class LipSyncEngine:
    """Wav2Lip lip-sync for one process: models are loaded on first use and kept."""

    def __init__(self, models_dir: Path, device: str = "auto", cache_dir: Path | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.device = resolve_device(device)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._generators: dict[str, MouthGenerator] = {}
        self._locators: dict[str, FaceLocator] = {}

    def check_ready(self, options: RenderOptions) -> None:
        """Load the checkpoint (and face finder) the options name now, so a missing or broken
        model stops a job before any work instead of after its first video. Raises :class:`ModelError`."""
        self._generator(options)
        self._face_locator(options)

    def load_audio(self, path: Path) -> SpeechAudio:
        """Decode the speech and compute its mel once; reuse the result for every video."""
        return load_speech(Path(path))

    def audio_head(self, audio: SpeechAudio, seconds: float) -> SpeechAudio:
        """The first ``seconds`` of the speech: rendered, a preview clip of what the whole will be."""
        return audio.head(seconds)

    def render(self, audio: SpeechAudio, video: Path, output: Path, options: RenderOptions = RenderOptions(),
               progress: ProgressFn | None = None, should_stop: StopFn | None = None,
               video_digest: str | None = None) -> RenderResult:
        """Write ``output`` (an .mp4): ``video``'s picture with the mouth re-drawn to ``audio``.

        The output is as long as the audio and is written under a temporary name in its folder,
        renamed into place only when complete. ``video_digest``, the video's sha256 when the
        caller has already read it, keys the face-track cache without reading the file again.
        """
        started = time.perf_counter()
        video, output = Path(video), Path(output)
        generator = self._generator(options)
        info = media.probe(video)
        total = audio.frame_count(info.fps)
        timer = StageTimer()
        cache = self._track_cache_path(video, options, video_digest)
        track = FaceTrack.load(cache) if cache is not None else None
        # One progress scale for the whole render: face analysis (when not cached), then frames.
        analysed = 0 if track is not None else info.frame_count
        if track is None:
            with timer("faces"):
                track = self._analyse(video, info, options, _shifted(progress, 0, analysed + total), should_stop)
            if cache is not None:
                track.save(cache)
        else:
            log.info("face track of %s taken from the cache", video.name)
        if not track.has_face.any():
            raise NoFaceError(f"No face was found anywhere in '{video.name}'. Use a video or photo where one "
                              "face is clearly visible, facing the camera, with the mouth not covered.")
        schedule = media.frame_schedule(len(track), total, options.loop)
        tmp = output.with_name(f".{output.stem}.partial{output.suffix}")
        try:
            with media.VideoWriter(tmp, info.width, info.height, info.fps, crf=options.crf, preset=options.preset,
                                   color=info.color, audio_path=audio.path,
                                   audio_duration_s=audio.duration_s) as writer:
                chunk = frames_per_chunk(info.width, info.height, options.batch_size)
                loop = FrameLoop(track, audio.windows(info.fps), generator, writer.convert, writer.write,
                                 options, timer, chunk)
                loop.run(media.read_frames(video, info, schedule), schedule,
                         _shifted(progress, analysed, analysed + total), should_stop)
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
        faces_shown = int(track.has_face[np.asarray(schedule)].sum())
        return RenderResult(output=str(output), frames=total, fps=info.fps, duration_s=total / info.fps,
                            width=info.width, height=info.height, frames_with_face=faces_shown,
                            seconds=time.perf_counter() - started, stage_seconds=dict(timer.seconds))

    def preview(self, audio: SpeechAudio, video: Path, image: Path, options: RenderOptions = RenderOptions(),
                progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                video_digest: str | None = None) -> Preview:
        """Write a preview picture of what :meth:`render` will do with ``video`` to ``image`` and
        return its figures (:mod:`.preview`). Needs no Wav2Lip model; the face track it computes
        is cached, so the render that follows does not analyse the video again."""
        video = Path(video)
        info = media.probe(video)
        cache = self._track_cache_path(video, options, video_digest)
        track = FaceTrack.load(cache) if cache is not None else None
        if track is None:
            track = self._analyse(video, info, options, progress, should_stop)
            if cache is not None:
                track.save(cache)
        return write_preview(video, info, track, audio.duration_s, audio.frame_count(info.fps), options, Path(image))

    def _generator(self, options: RenderOptions) -> MouthGenerator:
        name = options.checkpoint
        if name not in self._generators:
            model = load_wav2lip(require_model(self.models_dir, name), device="cpu")
            self._generators[name] = MouthGenerator(model, self.device, options.batch_size)
        generator = self._generators[name]
        generator.batch_size = options.batch_size
        return generator

    def _analyse(self, video: Path, info: media.VideoInfo, options: RenderOptions,
                 progress: ProgressFn | None, should_stop: StopFn | None) -> FaceTrack:
        """The face track of every source frame, in one streaming pass over the video."""
        locator = self._face_locator(options)

        def on_batch(done: int) -> None:
            check_stop(should_stop)
            if progress:
                progress(Progress(done, info.frame_count, "faces"))

        chunk = frames_per_chunk(info.width, info.height, ANALYSIS_BATCH)
        with closing(prefetch(media.read_frames(video, info, range(info.frame_count)), depth=chunk)) as frames:
            return analyse(frames, locator, smooth_frames=options.smooth_frames, batch_size=chunk,
                           on_batch=on_batch)

    def _face_backend(self, options: RenderOptions) -> str:
        if options.face_backend != "auto":
            return options.face_backend
        # S3FD + FAN take seconds a frame on a CPU: worth it only on a GPU.
        return "face-alignment" if self.device.type == "cuda" and fan_weights_present() else "mediapipe"

    def _face_locator(self, options: RenderOptions) -> FaceLocator:
        """A fresh locator (no memory of another video) on this backend's models, loaded once."""
        backend = self._face_backend(options)
        if backend not in self._locators:
            self._locators[backend] = (
                FanLocator.load(self.device, allow_download=True) if backend == "face-alignment"
                else FaceLocator.load(self.device))
        return self._locators[backend].for_video(options.face)

    def _track_cache_path(self, video: Path, options: RenderOptions, digest: str | None = None) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = digest or file_sha256(video)
        key = f"{self._face_backend(options)}-{options.face}-s{options.smooth_frames}-v{TRACK_VERSION}"
        return self.cache_dir / "tracks" / f"{digest}-{key}.npz"


def _shifted(progress: ProgressFn | None, offset: int, total: int) -> ProgressFn | None:
    """Report a stage's progress as part of the whole render: ``offset`` frames before it,
    ``total`` in all."""
    if progress is None:
        return None
    return lambda p: progress(Progress(offset + p.frames_done, total, p.stage))
