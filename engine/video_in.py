"""Probe and stream-decode face videos and stills to BGR frames at a constant rate.

The engine never holds a whole video: :func:`read_frames` follows any schedule of frame indices
(forward runs stream; a backward run is decoded forward a keyframe interval at a time and handed
out reversed, holding at most :data:`MAX_HELD_BYTES`), so memory is the same for a ten-second clip
and a ten-minute one, and a ping-pong schedule decodes each picture about once. Frames are
addressed by *slot*: slot ``i`` is the picture on screen at time ``i / fps``, so variable-frame-rate
phone videos come out at the constant rate the encoder writes (frames are duplicated or dropped by
timestamp, nearest wins, as FFmpeg's ``fps`` filter does by default).
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from .complete import cut_short, declares_length, has_zero_tail, missing_seconds
from .errors import IncompleteInputError, VideoError, reason
from .formats import IMAGE_SUFFIXES, empty_file_message
from .yuv import I420

STILL_SUFFIXES = frozenset(IMAGE_SUFFIXES)
"""Files read as one still picture (with cv2, which applies a JPEG's EXIF orientation)."""

_COMMON_RATES = tuple(Fraction(r) for r in (24, 25, 30, 48, 50, 60, 120)) + tuple(
    Fraction(r * 1000, 1001) for r in (24, 30, 60))
_SNAP_TOLERANCE = 0.02
"""A measured average rate within 2 % of a standard rate is that rate (VFR phone videos drift)."""

MAX_HELD_BYTES = 256 * 2**20
"""Decoded pictures held for a backward run, at most (with :data:`MAX_HELD_FRAMES`): a keyframe
interval that fits is decoded once and handed out reversed; a longer one is handed out in blocks
of this size, each decoded from the keyframe before it."""
MAX_HELD_FRAMES = 300
"""At most this many pictures held (x264's default keyframe interval is 250)."""
_SEEK_GAP_FRAMES = 64
_SEEK_GAP_S = 2.0
"""A forward jump longer than this (and :data:`_SEEK_GAP_FRAMES`) seeks instead of decoding through the gap."""
_SWS_THREADS = min(os.cpu_count() or 1, 8)
_END_CHECK_S = 3.0
"""The completeness check demuxes from this far before the declared end."""
_SWS_ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
_I420_FORMATS = frozenset({"yuv420p", "yuvj420p"})
"""Decoded layouts that are already what the encoder takes (yuvj420p: the same planes, full range)."""

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

    Ascending indices stream; a descending run (ping-pong) is decoded forward a keyframe interval
    at a time and yielded backwards, and the pictures a descending run will show again are kept
    from the ascending run before it, so each picture is decoded about once (see
    :meth:`_SlotReader.pictures`). Every array yielded is a fresh one the caller may draw on. Indices past
    the last decodable picture repeat that picture (a container's duration can overstate it).
    """
    if info.is_still:
        image = _load_still(Path(path))
        for _ in indices:
            yield image.copy()
        return
    with _SlotReader(Path(path), info) as reader:
        for frame in reader.pictures(indices):
            yield reader.to_bgr(frame)


def read_i420(path: str | os.PathLike[str], info: VideoInfo, indices: Iterable[int]) -> Iterator[I420]:
    """As :func:`read_frames`, but each frame as the encoder takes it: yuv420p, in the source's
    own matrix and range, cropped to even width and height (what 4:2:0 H.264 can store).

    No colour conversion happens for yuv420p sources (nearly all); other layouts (4:2:2, 4:4:4,
    10 bits) are resampled to 4:2:0 8-bit by swscale with their matrix and range kept. A still
    is converted from BGR once, with its BT.709 tags.
    """
    width, height = info.width - info.width % 2, info.height - info.height % 2
    if info.is_still:
        image = _load_still(Path(path))[:height, :width]
        still = _i420_of(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(
            format="yuv420p", dst_colorspace="itu709", dst_color_range=_STILL_COLOR[3],
            interpolation=_SWS_ACCURATE), 0, width, height)
        for _ in indices:
            yield I420(still.data.copy())
        return
    with _SlotReader(Path(path), info) as reader:
        for frame in reader.pictures(indices):
            yield _i420_of(reader.to_yuv420p(frame), info.rotation, width, height)


def _i420_of(frame: av.VideoFrame, rotation: int, width: int, height: int) -> I420:
    """Copy a yuv420p picture's planes (rotated for display, cropped) into one :class:`I420`."""
    planes = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
        planes.append(cv2.rotate(rows, _ROTATE[rotation]) if rotation else rows)
    y, u, v = planes
    return I420.from_planes(y[:height, :width], u[:height // 2, :width // 2], v[:height // 2, :width // 2])


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
        if gap < 0 or gap > max(_SEEK_GAP_FRAMES, _SEEK_GAP_S * self._info.fps):
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

    def pictures(self, indices: Iterable[int]) -> Iterator[av.VideoFrame]:
        """The decoded picture of each slot in ``indices``, in that order (see :func:`read_frames`).

        Slots are read forward with :meth:`frame_at`. A descending run ``a, a-1, …, b`` is handed
        out from pictures held back: those of the ascending run just before it that it shows
        again (its turning point), then blocks decoded forward from a keyframe, each as long as
        the keyframe interval when that fits in :meth:`_held_limit`. Held pictures are the
        decoder's own (several slots may show one); the caller converts or copies them.
        """
        order = indices if isinstance(indices, Sequence) else list(indices)
        limit = self._held_limit()
        held: dict[int, av.VideoFrame] = {}
        i = 0
        while i < len(order):
            descent = _descent_after(order, i)
            if descent == i:
                end = _descent_end(order, i)
                bottom = order[end - 1]
                for slot in range(order[i], bottom - 1, -1):
                    if slot not in held:
                        held.update(self._block(slot, bottom, limit - len(held)))
                    yield held.pop(slot)
                held.clear()
                i = end
                continue
            keep = range(0)  # the slots of the coming descent that this ascending run decodes
            if descent < len(order):
                top = order[descent]
                keep = range(max(order[_descent_end(order, descent) - 1], top - limit + 1), top + 1)
            for slot in order[i:descent]:
                picture = self.frame_at(slot)
                if slot in keep:
                    held[slot] = picture
                yield picture
            i = descent

    def _held_limit(self) -> int:
        """Pictures held for a descending run, at most."""
        picture_bytes = self._info.width * self._info.height * 3 // 2
        return max(1, min(MAX_HELD_FRAMES, MAX_HELD_BYTES // picture_bytes))

    def _block(self, top: int, bottom: int, limit: int) -> dict[int, av.VideoFrame]:
        """Pictures of slots ``top`` down to at most ``limit`` slots and not below ``bottom``,
        decoded forward: on from the decoder's position when ``top`` lies within ``limit`` ahead
        of it, else from the keyframe before ``top`` (all of its interval when it fits)."""
        if not 0 <= top - self._slot <= limit:
            self._seek(top)
            self._slot = self._slot_of(self._current)
        block: deque[tuple[int, av.VideoFrame]] = deque(maxlen=max(1, limit))
        for slot in range(self._slot, top + 1):
            picture = self.frame_at(slot)
            if slot >= bottom:
                block.append((slot, picture))
        return dict(block)

    def _slot_of(self, frame: av.VideoFrame) -> int:
        """The first slot that shows ``frame`` (see :meth:`frame_at`)."""
        return max(0, math.floor((self._time(frame) - self._info.start_s) * self._info.fps - 0.5) + 1)

    def to_yuv420p(self, frame: av.VideoFrame) -> av.VideoFrame:
        """The picture as 8-bit 4:2:0, its matrix and range unchanged (usually the frame itself)."""
        if frame.format.name in _I420_FORMATS:
            return frame
        color_range = None if frame.color_range == _RANGE_UNSPECIFIED else frame.color_range
        return self._reformatter.reformat(frame, format="yuv420p", src_color_range=color_range,
                                          dst_color_range=color_range, threads=_SWS_THREADS)

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


def _descent_after(order: Sequence[int], start: int) -> int:
    """Where the first descending run (a slot followed by the one before it) at or after ``start``
    begins; ``len(order)`` when there is none."""
    for i in range(start, len(order) - 1):
        if order[i + 1] == order[i] - 1:
            return i
    return len(order)


def _descent_end(order: Sequence[int], start: int) -> int:
    """One past the end of the descending run that begins at ``start``."""
    end = start + 1
    while end < len(order) and order[end] == order[end - 1] - 1:
        end += 1
    return end


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
    """The first picture, decoded on one thread: starting the decoder's thread pool for one
    picture took longer than decoding it (4 ms alone, 7-35 ms with the pool on a busy 2-core box)."""
    stream.codec_context.thread_count = 1
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
