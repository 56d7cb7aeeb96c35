"""The engine's one public class: load models once, then render video after video.

Data path of :meth:`LipSyncEngine.render`, top to bottom::

    probe video ─▶ frame schedule (trim / loop to the audio) ─▶ face track of the frames it shows
      (cached by content) ─▶ frame loop (:mod:`.pipeline`: decode ─▶ Wav2Lip or MuseTalk ─▶ blend
      ─▶ encode, overlapped) ─▶ output

The engine knows nothing of folders, SQLite or systemd; it raises :mod:`.errors` whose messages
are meant for the person who dropped the job.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import media, openvino_cpu
from .audio import SpeechAudio, load_speech
from .errors import EngineError, ModelError, NoFaceError
from .faces.detector import FaceDetector
from .faces.fan import FanLocator, fan_weights_present
from .faces.locate import FaceLocator
from .faces.mesh import FaceMesh
from .faces.runtime import FaceRuntime
from .faces.track import TRACK_VERSION, FaceTrack, analyse, look_ahead
from .infer import MouthGenerator, Network
from .int8 import Int8Wav2Lip
from .models import file_sha256, require_model
from .options import Progress, RenderOptions, RenderResult
from .pipeline import DECODE_AHEAD, FrameLoop, ProgressFn, StageTimer, StopFn, check_stop, frames_per_group
from .preview import Preview, write_preview
from .redraw import MuseTalkRedraw, Redraw, Wav2LipRedraw
from .stages import prefetch
from .threads import ThreadPlan, opencv_threads, torch_threads
from .wav2lip import Wav2Lip, load_wav2lip

if TYPE_CHECKING:
    from .musetalk.audio import SpeechPrompts
    from .musetalk.networks import MuseTalkNetworks

log = logging.getLogger(__name__)

ANALYSIS_BATCH = {"cuda": 32, "cpu": 8}
"""Frames per face-model batch: small models, so larger batches gain little on a GPU; on a CPU a
batch is ~0.2 s of work, and a stop request is checked between batches."""
ANALYSIS_BYTES = 192 * 2**20
"""Decoded BGR frames held for one face-model batch, at most."""


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
    """Lip-sync (Wav2Lip or MuseTalk 1.5) for one process: models are loaded on first use and kept."""

    def __init__(self, models_dir: Path, device: str = "auto", cache_dir: Path | None = None,
                 threads: ThreadPlan | None = None, musetalk: MuseTalkNetworks | None = None) -> None:
        """``musetalk``: MuseTalk's networks already loaded (else read from ``models_dir`` when
        a job first asks for them)."""
        self.models_dir = Path(models_dir)
        self.device = resolve_device(device)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.threads = threads or ThreadPlan.for_device(self.device.type)
        self._generators: dict[str, MouthGenerator] = {}
        self._locators: dict[str, FaceLocator] = {}
        self._musetalk = musetalk.to(self.device) if musetalk is not None else None
        self._last_prompts: tuple[np.ndarray, SpeechPrompts] | None = None

    def check_ready(self, options: RenderOptions) -> None:
        """Load the checkpoint (and face finder) the options name now, so a missing or broken
        model stops a job before any work instead of after its first video. Raises :class:`ModelError`."""
        if options.model == "musetalk":
            self._musetalk_networks()
        else:
            self._generator(options)
        self._face_locator(options)

    def load_audio(self, path: Path, options: RenderOptions | None = None) -> SpeechAudio:
        """Decode the speech and compute its features once (the mel; MuseTalk's audio prompts
        when ``options`` choose MuseTalk); reuse the result for every video of the job."""
        audio = load_speech(Path(path))
        if options is not None and options.model == "musetalk":
            audio = self._with_prompts(audio)
        return audio

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
        info = media.probe(video)
        digest = video_digest or (file_sha256(video) if self.cache_dir is not None else None)
        redraw = self._redraw(options, audio, info.fps, digest)
        total = audio.frame_count(info.fps)
        timer = StageTimer()
        schedule = media.frame_schedule(info.frame_count, total, options.loop)
        frames = self.frames_to_analyse(audio, info, options)
        cache, track = self._cached_track(video, options, digest, frames)
        # One progress scale for the whole render: face analysis (when not cached), then frames.
        analysed = 0 if track is not None else frames
        if track is None:
            with timer("faces"):
                track = self._analyse(video, info, frames, options, _shifted(progress, 0, analysed + total),
                                      should_stop, cache)
        if not track.has_face.any():
            where = (f"in the first {len(track) / info.fps:.1f} s of '{video.name}' (as far as the audio needs)"
                     if len(track) < info.frame_count else f"anywhere in '{video.name}'")
            raise NoFaceError(f"No face was found {where}. Use a video or photo where one face is clearly "
                              "visible, facing the camera, with the mouth not covered.")
        tmp = output.with_name(f".{output.stem}.partial{output.suffix}")
        try:
            with media.VideoWriter(tmp, info.width, info.height, info.fps, crf=options.crf, preset=options.preset,
                                   color=info.color, audio_path=audio.path, audio_duration_s=audio.duration_s,
                                   threads=self.threads.encoder) as writer:
                width, height = writer.size
                loop = FrameLoop(track, redraw, writer.matrix, writer.write,
                                 timer, frames_per_group(width, height, redraw.batch_size),
                                 frames_per_group(width, height, DECODE_AHEAD), self.threads, (width, height))
                loop.run(media.read_i420(video, info, schedule), schedule,
                         _shifted(progress, analysed, analysed + total), should_stop)
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
        faces_shown = int(track.has_face[np.asarray(schedule)].sum())
        return RenderResult(output=str(output), frames=total, fps=info.fps, duration_s=total / info.fps,
                            width=width, height=height, frames_with_face=faces_shown,
                            seconds=time.perf_counter() - started, stage_seconds=dict(timer.seconds))

    def frames_to_analyse(self, audio: SpeechAudio, info: media.VideoInfo, options: RenderOptions) -> int:
        """Source frames a render's face pass analyses when the track is not cached: those the
        schedule shows and those the track's smoothing looks ahead to, so audio shorter than the
        video analyses less of it."""
        shown = min(info.frame_count, audio.frame_count(info.fps))
        return min(info.frame_count, shown + look_ahead(options.smooth_frames))

    def preview(self, audio: SpeechAudio, video: Path, image: Path, options: RenderOptions = RenderOptions(),
                progress: ProgressFn | None = None, should_stop: StopFn | None = None,
                video_digest: str | None = None) -> Preview:
        """Write a preview picture of what :meth:`render` will do with ``video`` to ``image`` and
        return its figures (:mod:`.preview`). Needs no Wav2Lip model; the face track it computes
        is cached, so the render that follows does not analyse the video again."""
        video = Path(video)
        info = media.probe(video)
        cache, track = self._cached_track(video, options, video_digest, info.frame_count)
        if track is None:
            track = self._analyse(video, info, info.frame_count, options, progress, should_stop, cache)
        return write_preview(video, info, track, audio.duration_s, audio.frame_count(info.fps), options, Path(image))

    def _redraw(self, options: RenderOptions, audio: SpeechAudio, fps: float, video_digest: str | None) -> Redraw:
        """The model the options choose, ready for the frame loop (loading it on first use)."""
        if options.model == "musetalk":
            from .musetalk.generator import MuseTalkGenerator

            networks = self._musetalk_networks()
            prompts = self._with_prompts(audio).prompts
            return MuseTalkRedraw(MuseTalkGenerator(networks, prompts, fps, self.device, options.batch_size))
        generator, windows = self._generator(options), audio.windows(fps)
        if isinstance(generator.network, Int8Wav2Lip):  # each video's int8 ranges come from its own faces
            spread = np.linspace(0, len(windows) - 1, MouthGenerator.cpu_batch).round().astype(np.int64)
            generator.network.calibrate_next(video_digest, windows[spread])
        return Wav2LipRedraw(generator, windows, options.pads)

    def _musetalk_networks(self) -> MuseTalkNetworks:
        """MuseTalk's three networks, read from the models folder once (tens of seconds)."""
        if self._musetalk is None:
            from .musetalk.layout import require_files
            from .musetalk.networks import load_networks

            files = require_files(self.models_dir)  # which file goes where, before any reading
            try:
                self._musetalk = load_networks(files, self.device)
            except ImportError as error:
                raise ModelError("MuseTalk needs packages that are not installed here (diffusers, transformers): "
                                 "install them with `pip install 'lipsyncd[musetalk]'`, or use engine.model: "
                                 "wav2lip.") from error
        return self._musetalk

    def _with_prompts(self, audio: SpeechAudio) -> SpeechAudio:
        """``audio`` with MuseTalk's prompts: its own when it has them (made by :meth:`load_audio`),
        else those of the last speech seen here, when it is the same one (a worker process gets
        the job's audio without them and renders several videos of the job), else new ones."""
        if audio.prompts is not None:
            return audio
        from .musetalk.audio import SpeechPrompts

        last = self._last_prompts
        if last is None or last[0] is not audio.samples:
            networks = self._musetalk_networks()
            last = self._last_prompts = (audio.samples,
                                         SpeechPrompts(audio.samples, networks.whisper, networks.features))
        return replace(audio, prompts=last[1])

    def _generator(self, options: RenderOptions) -> MouthGenerator:
        """The Wav2Lip generator the options ask for, made on first use and kept: on a CPU, int8
        through OpenVINO, or fp32 through the runtime the options choose; on a GPU, fp16 torch."""
        runtime = self._cpu_runtime(options)
        name = f"{options.checkpoint}-{runtime}"
        if name not in self._generators:
            path = require_model(self.models_dir, options.checkpoint)
            model: Wav2Lip | None = None
            network: Network | None = None
            if runtime in ("int8", "openvino"):  # OpenVINO's cache entries are named by the checkpoint's digest
                make = Int8Wav2Lip if runtime == "int8" else openvino_cpu.OpenVinoWav2Lip
                # The checkpoint is read only when its converted network is not in the cache yet.
                network = make(partial(load_wav2lip, path, device="cpu"), self.threads.network_workers,
                               self._openvino_cache(), file_sha256(path)[:16], self.threads.network)
            else:
                model = load_wav2lip(path, device="cpu")
            self._generators[name] = MouthGenerator(model, self.device, options.batch_size, network)
        generator = self._generators[name]
        generator.batch_size = options.batch_size
        return generator

    def _cpu_runtime(self, options: RenderOptions) -> str:
        """What runs Wav2Lip: ``torch`` (always on a GPU, which runs fp16), ``int8`` (OpenVINO),
        or in fp32 ``openvino`` / ``torch`` as ``options.runtime`` says. ``auto`` takes OpenVINO
        when it is installed and there is a cache to keep its converted network in: converting
        costs ~3 CPU seconds, the gain of ~300 frames, so without a cache torch is quicker."""
        if self.device.type != "cpu":
            return "torch"
        if options.precision == "int8":
            return "int8"
        if options.runtime == "auto":
            return "openvino" if self.cache_dir is not None and openvino_cpu.available() else "torch"
        return options.runtime

    def _openvino_cache(self) -> Path | None:
        """Where OpenVINO's converted networks (per checkpoint) and int8 ones (per checkpoint and
        video) are kept, when there is a cache."""
        return self.cache_dir / "openvino" if self.cache_dir is not None else None

    def _cached_track(self, video: Path, options: RenderOptions, digest: str | None,
                      frames: int) -> tuple[Path | None, FaceTrack | None]:
        """Where this video's face track is cached, and the track when it is there and covers the
        first ``frames`` source frames (a render of a short audio caches a track of fewer frames
        than a longer audio needs; that one then analyses again, from the start, as far as it needs)."""
        cache = self._track_cache_path(video, options, digest)
        track = FaceTrack.load(cache) if cache is not None else None
        if track is not None and len(track) < frames:
            track = None
        if track is not None:
            log.info("face track of %s taken from the cache", video.name)
        return cache, track

    def _analyse(self, video: Path, info: media.VideoInfo, frames: int, options: RenderOptions,
                 progress: ProgressFn | None, should_stop: StopFn | None, cache: Path | None) -> FaceTrack:
        """The face track of the first ``frames`` source frames, in one streaming pass over them
        on the face models' threads, saved to ``cache`` when there is one."""
        locator = self._face_locator(options)

        def on_batch(done: int) -> None:
            check_stop(should_stop)
            if progress:
                progress(Progress(done, frames, "faces"))

        batch = ANALYSIS_BATCH.get(self.device.type, ANALYSIS_BATCH["cpu"])
        chunk = max(1, min(batch, ANALYSIS_BYTES // (info.width * info.height * 3)))
        frames_in = prefetch(media.read_frames(video, info, range(frames)), depth=chunk,
                             interrupt=lambda: check_stop(should_stop))
        with closing(frames_in) as pictures, torch_threads(self.threads.faces), \
                opencv_threads(self.threads.opencv):
            track = analyse(pictures, locator, smooth_frames=options.smooth_frames, batch_size=chunk,
                            on_batch=on_batch)
        if cache is not None:
            track.save(cache)
        return track

    def _face_backend(self, options: RenderOptions) -> str:
        if options.face_backend != "auto":
            return options.face_backend
        # S3FD + FAN take seconds a frame on a CPU: worth it only on a GPU.
        return "face-alignment" if self.device.type == "cuda" and fan_weights_present() else "mediapipe"

    def _face_locator(self, options: RenderOptions) -> FaceLocator:
        """A fresh locator (no memory of another video) on this backend's models, loaded once per
        backend and runtime."""
        backend = self._face_backend(options)
        runtime = self._face_runtime(options) if backend == "mediapipe" else None
        key = backend if runtime is None else f"{backend}-{runtime.name}"
        if key not in self._locators:
            self._locators[key] = (FanLocator.load(self.device, allow_download=True) if runtime is None
                                   else FaceLocator(FaceDetector(self.device, runtime=runtime),
                                                    FaceMesh(self.device, runtime=runtime)))
        return self._locators[key].for_video(options.face)

    def _face_runtime(self, options: RenderOptions) -> FaceRuntime:
        """MediaPipe's face models run through OpenVINO where Wav2Lip's fp32 network would
        (:meth:`_cpu_runtime`), on the face stage's threads. That rule holds for them too: converting
        both costs 2.3-3.2 CPU s, which the face pass wins back after 300-500 frames (4.5-7 ms of CPU
        a frame instead of 9-14, ``benchmarks/face_bench.py``), so without a cache ``auto`` keeps torch."""
        openvino = self._cpu_runtime(replace(options, precision="fp32")) == "openvino"
        return FaceRuntime(openvino, self._openvino_cache(), self.threads.faces)

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
