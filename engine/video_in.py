"""Probe and stream-decode face videos and stills to BGR frames at a constant rate.

The engine never holds a whole video: :func:`read_frames` follows any schedule of frame indices
(forward runs stream; backward runs are decoded in short chunks after a seek), so memory is the
same for a ten-second clip and a ten-minute one. Frames are addressed by *slot*: slot ``i`` is the
picture on screen at time ``i / fps``, so variable-frame-rate phone videos come out at the constant
rate the encoder writes (frames are duplicated or dropped by timestamp, nearest wins, as FFmpeg's
``fps`` filter does by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from .complete import cut_short, declares_length, has_zero_tail, missing_seconds
from .errors import IncompleteInputError, VideoError, reason
from .formats import IMAGE_SUFFIXES, empty_file_message

STILL_SUFFIXES = frozenset(IMAGE_SUFFIXES)
"""Files read as one still picture (with cv2, which applies a JPEG's EXIF orientation)."""

_COMMON_RATES = tuple(Fraction(r) for r in (24, 25, 30, 48, 50, 60, 120)) + tuple(
    Fraction(r * 1000, 1001) for r in (24, 30, 60))
_SNAP_TOLERANCE = 0.02
"""A measured average rate within 2 % of a standard rate is that rate (VFR phone videos drift)."""

MAX_CHUNK_BYTES = 256 * 2**20
"""Decoded pictures held for one backward chunk, at most (with :data:`MAX_CHUNK_FRAMES`)."""
MAX_CHUNK_FRAMES = 64
_SEEK_GAP_S = 2.0
"""A forward jump longer than this seeks instead of decoding through the gap."""
_SWS_THREADS = min(os.cpu_count() or 1, 8)
_END_CHECK_S = 3.0
"""The completeness check demuxes from this far before the declared end."""

_ROTATE = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}

# FFmpeg's "unspecified" values (AVCOL_PRI/TRC/SPC_UNSPECIFIED = 2, AVCOL_RANGE_UNSPECIFIED = 0).
_UNSPECIFIED = 2
_RANGE_UNSPECIFIED = 0
# Stills are sRGB: BT.709 primaries and matrix, sRGB transfer; encoded to limited-range YUV.
_STILL_COLOR = (1, 13, 1, 1)


@dataclass(frozen=True)
class ColorTags:
    """FFmpeg colour enums (``AVColorPrimaries`` ...) to copy from the source to the output; ``None``
    where the source does not say. The writer converts BGR to YUV with ``space`` and ``range`` so
    that decode → encode is a round trip and the tags tell players the truth."""

    primaries: int | None = None
    trc: int | None = None
    space: int | None = None
    range: int | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What the engine needs to know about one face video or still, from :func:`probe`."""

    path: str
    width: int
    """Width of the frames :func:`read_frames` yields (after rotation)."""
    height: int
    fps: float
    """The constant output rate: the stream's average rate, snapped to a standard rate when close."""
    frame_count: int
    """Slots at ``fps`` covering the stream's duration (1 for a still)."""
    duration_s: float
    rotation: int
    """Degrees (0, 90, 180, 270) the stored picture is turned clockwise for display; already
    applied to the frames :func:`read_frames` yields. Stills: 0 (EXIF orientation is applied)."""
    is_still: bool
    color_primaries: int | None = None
    color_trc: int | None = None
    colorspace: int | None = None
    color_range: int | None = None
    start_s: float = 0.0
    """Timestamp of the first picture; slot ``i`` is shown at ``start_s + i / fps``."""
    declares_length: bool = False
    """The container states its real length, so running out of pictures well before
    ``frame_count`` means the file is incomplete (see :mod:`.complete`)."""

    @property
    def color(self) -> ColorTags:
        return ColorTags(self.color_primaries, self.color_trc, self.colorspace, self.color_range)


def probe(path: str | os.PathLike[str], *, still_fps: float = 25.0) -> VideoInfo:
    """Describe a video or still; decode its first picture to prove it is usable.

    Raises :class:`VideoError` with a plain message when the file cannot be opened, has no video,
    has no frames, or its first frame cannot be decoded; :class:`IncompleteInputError` when its
    data ends well before the length its container declares, or it fails and ends in zeros (a
    preallocated copy not yet filled in).
    """
    path = Path(path)
    try:
        if path.suffix.lower() in STILL_SUFFIXES:
            image = _load_still(path)
            return VideoInfo(str(path), image.shape[1], image.shape[0], float(still_fps), 1,
                             1.0 / still_fps, 0, True, *_STILL_COLOR)
        _check_not_cut_short(path)
        with _open(path) as container:
            stream = _video_stream(container, path)
            first = _first_frame(container, stream, path)
            fps = _constant_rate(stream, still_fps)
            start_s = _frame_time(first) or 0.0
            duration_s = _duration(container, stream, start_s)
            declares = declares_length(container.format.name)
            if declares:
                _check_data_reaches_the_end(container, path)
            elif has_zero_tail(path):  # no length to check against: the zeros are the evidence
                raise IncompleteInputError(path.name, "its end is still empty (zero bytes)")
            rotation = (-round(first.rotation / 90) * 90) % 360
            width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
            return VideoInfo(
                str(path), width, height, float(fps), max(1, round(duration_s * fps)), duration_s,
                rotation, False,
                _known(first.color_primaries), _known(first.color_trc), _known(first.colorspace),
                None if first.color_range == _RANGE_UNSPECIFIED else int(first.color_range),
                start_s, declares,
            )
    except VideoError as error:
        raise _incomplete_or(path, error) from error
    except av.FFmpegError as error:  # demuxing for the length ran into damage (or zeros)
        raise _incomplete_or(path, VideoError(f"The video '{path.name}' is damaged and cannot be read "
                                              f"({reason(error)}).")) from error


def _check_not_cut_short(path: Path) -> None:
    """Raise :class:`IncompleteInputError` when the file's structure reaches past its end."""
    detail = cut_short(path)
    if detail:
        raise IncompleteInputError(path.name, detail)


def _incomplete_or(path: Path, error: VideoError) -> VideoError | IncompleteInputError:
    """A file that cannot be read *and* ends in zeros is most likely a copy still being filled in."""
    if has_zero_tail(path):
        return IncompleteInputError(path.name, "it cannot be read and its end is still empty (zero bytes)")
    return error


def _check_data_reaches_the_end(container: av.container.InputContainer, path: Path) -> None:
    """Cheap pre-check: seek to shortly before the end the container declares and demux (no
    decoding) to the end of the data; raise :class:`IncompleteInputError` when the packets stop
    well before it. A file cut off or not yet filled in has a header promising more than there is."""
    if not container.duration:
        return
    start = (container.start_time or 0) / av.time_base
    declared_end = start + container.duration / av.time_base
    try:
        container.seek(int(max(start, declared_end - _END_CHECK_S) * av.time_base), backward=True)
    except av.FFmpegError:
        return  # no cheap look at the end: the check while decoding remains
    reached = start
    try:
        for packet in container.demux():
            if packet.pts is not None and packet.time_base:
                reached = max(reached, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    except av.FFmpegError:  # the demuxer ran into garbage (zeros): the data ends here
        pass
    missing = missing_seconds(declared_end - start, reached - start)
    if missing:
        raise IncompleteInputError(path.name, f"it says it lasts {declared_end - start:.1f} s but its data "
                                              f"ends after {reached - start:.1f} s")


def read_frames(path: str | os.PathLike[str], info: VideoInfo, indices: Iterable[int]) -> Iterator[np.ndarray]:
    """Yield one BGR uint8 ``(height, width, 3)`` frame per slot index, in the order given.

    Consecutive ascending indices stream; a descending run is cut into chunks of at most
    :data:`MAX_CHUNK_FRAMES` frames (and :data:`MAX_CHUNK_BYTES`), each decoded forward after a seek
    and yielded backwards. Every array yielded is a fresh one the caller may draw on. Indices past
    the last decodable picture repeat that picture (a container's duration can overstate it).
    """
    if info.is_still:
        image = _load_still(Path(path))
        for _ in indices:
            yield image.copy()
        return
    chunk = max(1, min(MAX_CHUNK_FRAMES, MAX_CHUNK_BYTES // (info.width * info.height * 3 // 2)))
    with _SlotReader(Path(path), info) as reader:
        pending = iter(indices)
        nxt = next(pending, None)
        while nxt is not None:
            run = [nxt]
            nxt = next(pending, None)
            while nxt is not None and nxt == run[-1] - 1 and len(run) < chunk:
                run.append(nxt)
                nxt = next(pending, None)
            frames = [reader.frame_at(slot) for slot in reversed(run)]
            for frame in reversed(frames):
                yield reader.to_bgr(frame)


class _SlotReader:
    """A decoder positioned on one slot; moves forward by decoding, elsewhere by seeking."""

    def __init__(self, path: Path, info: VideoInfo) -> None:
        self._path, self._info = path, info
        self._reformatter = VideoReformatter()
        self._slot = 0
        self._current: av.VideoFrame  # the picture on screen in slot _slot; set by _restart
        self._next: av.VideoFrame | None  # the one after it (None: the video ends)
        self._container = _open(path)
        self._start()

    def __enter__(self) -> _SlotReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.close()

    def frame_at(self, slot: int) -> av.VideoFrame:
        """The decoded picture on screen during ``slot`` (the last one starting before its middle)."""
        if not 0 <= slot < self._info.frame_count:
            raise IndexError(f"frame index {slot} outside 0..{self._info.frame_count - 1}")
        gap = slot - self._slot
        if gap < 0 or gap > max(MAX_CHUNK_FRAMES, _SEEK_GAP_S * self._info.fps):
            self._seek(slot)
        boundary = self._boundary(slot)
        while (upcoming := self._next) is not None and self._time(upcoming) < boundary:
            self._current, self._next = upcoming, self._decode_next()
        if self._next is None:
            self._check_not_cut_short(slot)
        self._slot = slot
        return self._current

    def _check_not_cut_short(self, slot: int) -> None:
        """At the end of the decoded pictures: a slot past the last one would repeat it. Within
        the tolerance that is a container rounding its length up; beyond it, the file holds fewer
        pictures than it declares, and a render would pass off a half-copied video as whole."""
        info = self._info
        decoded_s = self._time(self._current) + 1 / info.fps - info.start_s
        if not info.declares_length or slot / info.fps < decoded_s:
            return
        if missing_seconds(info.frame_count / info.fps, decoded_s):
            raise IncompleteInputError(self._path.name, f"it says it has {info.frame_count} frames but only "
                                                        f"{round(decoded_s * info.fps)} can be decoded")

    def to_bgr(self, frame: av.VideoFrame) -> np.ndarray:
        """Convert with the frame's own matrix and range (swscale), then rotate for display.

        A picture shown in several slots is converted again each time rather than cached: a fresh
        array per slot is what lets the caller draw on it, and swscale costs about a copy."""
        converted = self._reformatter.reformat(frame, format="bgr24", threads=_SWS_THREADS)
        bgr = converted.to_ndarray()
        if converted is frame:  # already BGR: the array views the decoder's buffer
            bgr = bgr.copy()
        return cv2.rotate(bgr, _ROTATE[self._info.rotation]) if self._info.rotation else bgr

    def _reopen(self) -> None:
        self._container.close()
        self._container = _open(self._path)
        self._start()

    def _start(self) -> None:
        self._stream = _video_stream(self._container, self._path)
        self._stream.thread_type = "AUTO"
        self._restart()

    def _restart(self) -> None:
        self._frames = self._container.decode(self._stream)
        current = self._decode_next()
        if current is None:
            raise VideoError(f"The video '{self._path.name}' has no picture that can be decoded.")
        self._current = current
        self._next = self._decode_next()
        self._slot = 0

    def _seek(self, slot: int) -> None:
        """Land on the keyframe before ``slot``; step further back when the container's index
        lands late, and reopen from the start as the last resort."""
        target = self._info.start_s + slot / self._info.fps
        for back_s in (0.0, 3.0):
            if target - back_s <= self._info.start_s:
                break
            pts = int((target - back_s) / _time_base(self._stream))
            try:
                self._container.seek(pts, stream=self._stream, backward=True)
                self._restart()
            except (av.FFmpegError, VideoError):
                continue
            if self._time(self._current) < self._boundary(slot):
                return
        self._reopen()

    def _decode_next(self) -> av.VideoFrame | None:
        try:
            return next(self._frames, None)
        except av.FFmpegError as error:
            raise _incomplete_or(self._path, VideoError(
                f"The video '{self._path.name}' is damaged and cannot be decoded past this point "
                f"({reason(error)}).")) from error

    def _boundary(self, slot: int) -> float:
        return self._info.start_s + (slot + 0.5) / self._info.fps

    def _time(self, frame: av.VideoFrame) -> float:
        t = _frame_time(frame)
        return t if t is not None else self._info.start_s + (self._slot + 1) / self._info.fps


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"The video '{path.name}' does not exist or is not a file.")
    if empty := empty_file_message(path, "video"):
        raise VideoError(empty)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(f"The file '{path.name}' could not be opened as a video: it is damaged or "
                         f"not a video format we can read ({reason(error)}).") from error


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream: cover art attached to an audio file does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoError(f"The file '{path.name}' has no video picture in it (is it an audio file?).")


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: Path) -> av.VideoFrame:
    try:
        frame = next(container.decode(stream), None)
    except av.FFmpegError as error:
        raise VideoError(f"The first picture of '{path.name}' cannot be decoded: the file is damaged "
                         f"or uses an unsupported codec ({reason(error)}).") from error
    if frame is None:
        raise VideoError(f"The video '{path.name}' contains no frames.")
    return frame


def _constant_rate(stream: av.video.stream.VideoStream, default: float) -> Fraction:
    """The stream's average rate (guessed rate when absent), snapped to a standard rate if close."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 1 <= rate <= 240:
            nearest = min(_COMMON_RATES, key=lambda r: abs(r - rate))
            if abs(nearest - rate) <= _SNAP_TOLERANCE * nearest:
                return nearest
            return Fraction(round(float(rate), 3)).limit_denominator(1000)
    return Fraction(default)


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
              start_s: float) -> float:
    """The video stream's own duration; when the header lacks it (Matroska, WebM), the end of its
    last packet, found by demuxing without decoding."""
    if stream.duration:
        return float(stream.duration * _time_base(stream))
    end = None
    container.seek(0)
    for packet in container.demux(stream):
        if packet.pts is not None:
            packet_end = float((packet.pts + (packet.duration or 0)) * _time_base(stream))
            end = packet_end if end is None else max(end, packet_end)
    if end is not None:
        return max(0.0, end - start_s)
    return container.duration / av.time_base if container.duration else 0.0


def _frame_time(frame: av.VideoFrame) -> float | None:
    return float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base else None


def _known(value: int) -> int | None:
    return None if int(value) == _UNSPECIFIED else int(value)


def _load_still(path: Path) -> np.ndarray:
    """Decode a still to BGR; cv2 turns phone JPEGs upright from their EXIF orientation."""
    if empty := empty_file_message(path, "image"):
        raise VideoError(empty)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise VideoError(f"The image '{path.name}' cannot be read ({error.strerror}).") from error
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise VideoError(f"The image '{path.name}' cannot be decoded: it is damaged or not an image.")
    return image


def _time_base(stream: av.video.stream.VideoStream) -> Fraction:
    """The unit of the stream's timestamps. PyAV types it as optional; FFmpeg sets it on every
    stream it opens from a file."""
    if stream.time_base is None:
        raise VideoError("The video's stream has no time base, so its frames cannot be placed in time.")
    return stream.time_base
