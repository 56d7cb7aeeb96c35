"""Encode BGR frames to H.264 and mux the job's original audio as AAC, streaming, in one pass.

Frames go straight to libx264 as they arrive and audio is interleaved alongside them, so neither
the pictures nor the sound of a long video are ever held whole.

BGR → YUV uses the source's own matrix, so the output looks like the input in every player (also
those that ignore the tags and guess BT.709 for HD). BT.601 limited range (untagged and SD
sources) goes through OpenCV's ``COLOR_BGR2YUV_I420``: several times faster than swscale, and
identical to swscale's accurate-rounding result. Other matrices (BT.709 ...) go through swscale
with ``ACCURATE_RND``: its default rounding leaves mid-grey 4-5 levels off. Figures:
``benchmarks/ffmpeg_routes.py``.
"""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import cast

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Interpolation, VideoReformatter

from .errors import AudioError, EngineError, VideoError, reason
from .video_in import ColorTags

_SWS_MATRIX = {1: "itu709", 5: "itu601", 6: "itu601", 9: "bt2020", 10: "bt2020"}
"""FFmpeg colour-space tag → swscale matrix. Anything else (unknown, RGB, FCC...) is encoded and
tagged as BT.601 (tag 6, SMPTE 170M), which is also what swscale assumed when it decoded it."""
_DEFAULT_SPACE = 6
_BT601 = frozenset({5, 6})
_FULL_RANGE, _LIMITED_RANGE = 2, 1
_AAC_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000,
                        11025, 8000, 7350})
_AAC_FALLBACK_RATE = 48000
_AAC_BIT_RATE = 192_000
_SWS_THREADS = min(os.cpu_count() or 1, 8)
_SWS_ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND


class VideoWriter:
    """Context manager writing an MP4 (H.264 High, yuv420p, ``+faststart``) with optional AAC audio.

    ``width`` × ``height`` is the size of the frames passed to :meth:`write`. yuv420p needs even
    sizes, so an odd width or height is **cropped** by one pixel (the last column or row); even
    sizes are kept. The caller decides the frame count (audio length × fps); the audio is trimmed
    to ``audio_duration_s``. Leaving the ``with`` block by an exception deletes the partial file.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: float, *,
                 crf: int = 18, preset: str = "veryfast", color: ColorTags | None = None,
                 audio_path: str | os.PathLike[str] | None = None,
                 audio_duration_s: float | None = None) -> None:
        self.path = Path(path)
        self._in_size = (height, width)
        self._out_size = (height - height % 2, width - width % 2)
        if min(self._out_size) < 2:
            raise VideoError(f"The output video would be {width}×{height} pixels: too small to encode.")
        self._rate = _rate_fraction(fps)
        self._crf, self._preset = crf, preset
        color = color or ColorTags()
        space = color.space if color.space is not None and color.space in _SWS_MATRIX else _DEFAULT_SPACE
        self._space, self._range = space, _FULL_RANGE if color.range == _FULL_RANGE else _LIMITED_RANGE
        self._color = ColorTags(color.primaries, color.trc, self._space, self._range)
        self._audio_path = Path(audio_path) if audio_path is not None else None
        self._audio_duration_s = audio_duration_s
        self._reformatters = threading.local()  # an swscale context is not thread-safe: one per thread
        self._frames = 0

    @property
    def frames_written(self) -> int:
        return self._frames

    def __enter__(self) -> VideoWriter:
        try:
            self._container = av.open(str(self.path), "w", options={"movflags": "+faststart"})
        except (av.FFmpegError, OSError) as error:
            raise VideoError(f"The output video '{self.path.name}' cannot be created ({reason(error)}).") from error
        try:
            self._stream = self._add_video_stream()
            self._audio = (_AudioTrack(self._container, self._audio_path, self._audio_duration_s)
                           if self._audio_path is not None else None)
        except BaseException:
            self._abort()
            raise
        return self

    def convert(self, frame_bgr: np.ndarray) -> av.VideoFrame:
        """One BGR uint8 frame of the size given at construction → the encoder's yuv420p frame.

        Thread-safe, and the costliest step of writing after x264 itself, so the render pipeline
        calls it from several threads while one thread encodes.
        """
        if frame_bgr.shape != (*self._in_size, 3) or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected a uint8 BGR frame of shape {(*self._in_size, 3)}, "
                             f"got {frame_bgr.dtype} {frame_bgr.shape}")
        return self._to_yuv420p(frame_bgr)

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Encode the next frame: BGR uint8, or a frame :meth:`convert` made."""
        yuv = frame if isinstance(frame, av.VideoFrame) else self.convert(frame)
        yuv.pts = self._frames
        self._frames += 1
        self._encode(yuv)
        if self._audio is not None:
            self._audio.write_until(self._frames / self._rate)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self._encode(None)
            if self._audio is not None:
                self._audio.finish()
            self._container.close()
        except BaseException as error:
            self._abort()
            if isinstance(error, (EngineError, KeyboardInterrupt, SystemExit)):
                raise
            raise VideoError(f"The output video '{self.path.name}' could not be written ({reason(error)}).") from error

    def _to_yuv420p(self, frame_bgr: np.ndarray) -> av.VideoFrame:
        height, width = self._out_size
        pixels = np.ascontiguousarray(frame_bgr[:height, :width])
        if self._color.space in _BT601 and self._color.range == _LIMITED_RANGE:
            planes = cast("npt.NDArray[np.uint8]", cv2.cvtColor(pixels, cv2.COLOR_BGR2YUV_I420))  # cv2's stubs: any
            return av.VideoFrame.from_numpy_buffer(planes, format="yuv420p")
        return self._reformatter().reformat(
            av.VideoFrame.from_numpy_buffer(pixels, format="bgr24"), format="yuv420p",
            # PyAV takes swscale's matrix names ("itu709"); its stubs only know the numbers
            dst_colorspace=_SWS_MATRIX[self._space], dst_color_range=self._range,  # type: ignore[arg-type]
            interpolation=_SWS_ACCURATE, threads=_SWS_THREADS)

    def _reformatter(self) -> VideoReformatter:
        if not hasattr(self._reformatters, "sws"):
            self._reformatters.sws = VideoReformatter()
        return self._reformatters.sws

    def _add_video_stream(self) -> av.video.stream.VideoStream:
        stream = self._container.add_stream(
            "libx264", rate=self._rate,
            options={"crf": str(self._crf), "preset": self._preset, "profile": "high"})
        stream.height, stream.width = self._out_size
        stream.pix_fmt = "yuv420p"
        context = stream.codec_context
        context.time_base = 1 / self._rate
        # x264 frame threads (thread count 0 = its own choice from the core count) scale better
        # than the slice threads PyAV asks for by default.
        context.thread_type, context.thread_count = "FRAME", 0
        context.colorspace, context.color_range = self._space, self._range
        if self._color.primaries is not None:
            context.color_primaries = self._color.primaries
        if self._color.trc is not None:
            context.color_trc = self._color.trc
        return stream

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            packets = self._stream.encode(frame)
            self._container.mux(packets)
        except OSError as error:
            raise VideoError(f"The output video '{self.path.name}' could not be written "
                             f"({error.strerror or error}); is the disk full?") from error

    def _abort(self) -> None:
        """Close what is open and delete the partial file; the original error is what matters."""
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - a half-written container may fail to close; it is deleted next
            pass
        self.path.unlink(missing_ok=True)


class _AudioTrack:
    """The job's original audio, decoded at its own rate and re-encoded to AAC as video advances."""

    def __init__(self, container: av.container.OutputContainer, path: Path,
                 duration_s: float | None) -> None:
        self._path = path
        try:
            self._source = av.open(str(path))
        except (av.FFmpegError, OSError) as error:
            raise AudioError(f"The audio '{path.name}' cannot be opened ({reason(error)}).") from error
        if not self._source.streams.audio:
            self._source.close()
            raise AudioError(f"The file '{path.name}' has no audio in it.")
        source = self._source.streams.audio[0]
        rate = source.rate if source.rate in _AAC_RATES else _AAC_FALLBACK_RATE
        layout = "mono" if source.channels == 1 else "stereo"
        self._stream = container.add_stream("aac", rate=rate)
        self._stream.layout = layout
        self._stream.bit_rate = _AAC_BIT_RATE
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate,
                                            frame_size=self._stream.codec_context.frame_size or 1024)
        self._flushed = False
        self._decoded = self._source.decode(source)
        self._rate = rate
        self._limit = round(duration_s * rate) if duration_s is not None else None
        self._samples = 0
        self._container = container

    def write_until(self, seconds: Fraction | float) -> None:
        """Encode source audio until at least ``seconds`` of it are written (or it ends)."""
        target = seconds * self._rate
        while self._samples < target and not self._done():
            frame = self._next_frame()
            if frame is None:
                self._flush_resampler()
                break
            for chunk in self._resampler.resample(frame):
                self._encode(chunk)

    def finish(self) -> None:
        """Encode the rest (up to the trim length), flush the encoder, close the source."""
        self.write_until(float("inf"))
        self._flush_resampler()
        self._container.mux(self._stream.encode(None))
        self._source.close()

    def _done(self) -> bool:
        return self._limit is not None and self._samples >= self._limit

    def _next_frame(self) -> av.AudioFrame | None:
        try:
            return next(self._decoded, None)
        except av.FFmpegError as error:
            raise AudioError(f"The audio '{self._path.name}' is damaged and cannot be decoded "
                             f"({reason(error)}).") from error

    def _flush_resampler(self) -> None:
        if not self._flushed:
            for chunk in self._resampler.resample(None):
                self._encode(chunk)
            self._flushed = True

    def _encode(self, frame: av.AudioFrame) -> None:
        if self._done():
            return
        if self._limit is not None and self._samples + frame.samples > self._limit:
            frame = _head(frame, self._limit - self._samples)
        frame.pts = self._samples
        frame.time_base = Fraction(1, self._rate)
        self._samples += frame.samples
        self._container.mux(self._stream.encode(frame))


def _head(frame: av.AudioFrame, samples: int) -> av.AudioFrame:
    """The first ``samples`` samples of a planar float frame."""
    planes = cast("npt.NDArray[np.float32]", frame.to_ndarray())  # planar float ("fltp"): float32
    head = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, :samples]),
                                      format=frame.format.name, layout=frame.layout.name)
    head.sample_rate = frame.sample_rate
    return head


def _rate_fraction(fps: float) -> Fraction:
    """Exact rate for the container: NTSC rates (29.97 ...) become n*1000/1001, others a small
    fraction (25, 12.5, 23.976 ...)."""
    ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
    if abs(float(ntsc) - fps) < 1e-6:
        return ntsc
    return Fraction(fps).limit_denominator(1001)
