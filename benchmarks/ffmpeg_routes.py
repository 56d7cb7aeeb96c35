"""PyAV in-process vs ffmpeg-python piping through an ffmpeg binary: the measurement behind the choice.

The design card lists ffmpeg-python; the engine uses PyAV instead. This script measures both routes
on one clip: decode to BGR numpy frames, encode BGR frames to H.264 (CRF 18, veryfast), the peak
resident memory of each (each route runs in a fresh child process; a piped ffmpeg's own peak is
added), and the size of what each needs installed. It also times the BGR ↔ YUV conversions the
writer and reader choose between. ffmpeg-python and imageio-ffmpeg (which ships the binary) are
NOT project dependencies: install them aside and point ``--site`` at them, e.g.::

    pip install --target /tmp/ffroutes imageio-ffmpeg ffmpeg-python
    python benchmarks/ffmpeg_routes.py --site /tmp/ffroutes \\
        --clip /work/shared/media/frontal_1080x1920_man_talking_20s_hevc.mp4 --json out.json

Without ``--clip`` a 1080×1920 synthetic clip is generated first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

ROUTES = ("decode_pyav", "decode_ffmpeg_pipe", "encode_pyav", "encode_ffmpeg_pipe")
ENCODE_SOURCE_FRAMES = 8  # frames decoded once and cycled, so encode routes hold the same input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", type=Path, help="video to measure on (default: a generated 1080×1920 clip)")
    parser.add_argument("--frames", type=int, default=250, help="frames per route (default 250)")
    parser.add_argument("--site", type=Path, help="folder where ffmpeg-python and imageio-ffmpeg are installed")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)  # child-process mode
    args = parser.parse_args()
    if args.site:
        sys.path.insert(0, str(args.site))
    if args.route:
        print(json.dumps(_run_route(args.route, args.clip, args.frames)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        clip = args.clip or _generate_clip(Path(scratch) / "synthetic.mp4", args.frames)
        results = {"clip": str(clip), "frames": args.frames, "cpus": os.cpu_count(),
                   "routes": {route: _child(route, clip, args) for route in ROUTES},
                   "conversions_ms": _conversions(clip), "x264_threads_fps": _x264_threads(clip, args.frames),
                   "install_mb": _install_sizes(args.site)}
    _print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _child(route: str, clip: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one route in a fresh interpreter so its peak RSS is its own."""
    command = [sys.executable, __file__, "--route", route, "--clip", str(clip), "--frames", str(args.frames)]
    if args.site:
        command += ["--site", str(args.site)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout)


def _run_route(route: str, clip: Path, frames: int) -> dict[str, Any]:
    width, height = _size(clip)
    if route.startswith("encode"):
        source = list(_decode_pyav(clip, ENCODE_SOURCE_FRAMES))
        stream = (source[i % len(source)] for i in range(frames))
        start = time.perf_counter()
        size = (_encode_pyav if route == "encode_pyav" else _encode_ffmpeg)(stream, width, height)
        extra = {"output_bytes": size}
    else:
        start = time.perf_counter()
        count = sum(1 for _ in (_decode_pyav if route == "decode_pyav" else _decode_ffmpeg)(clip, frames))
        extra = {"decoded": count}
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return {"fps": round(frames / seconds, 1), "seconds": round(seconds, 2),
            "peak_rss_mb": round((own + child) / 2**20, 1), "python_rss_mb": round(own / 2**20, 1),
            "ffmpeg_rss_mb": round(child / 2**20, 1), **extra}


def _size(clip: Path) -> tuple[int, int]:
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


def _decode_pyav(clip: Path, frames: int) -> Iterator[np.ndarray]:
    """What engine.video_in does: frame-threaded decode, swscale to BGR."""
    reformatter = VideoReformatter()
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index == frames:
                return
            yield reformatter.reformat(frame, format="bgr24", threads=min(os.cpu_count() or 1, 8)).to_ndarray()


def _decode_ffmpeg(clip: Path, frames: int) -> Iterator[np.ndarray]:
    """ffmpeg-python's documented pattern: rawvideo bgr24 on stdout, read frame by frame."""
    import ffmpeg
    import imageio_ffmpeg

    width, height = _size(clip)
    process = (ffmpeg.input(str(clip)).output("pipe:", format="rawvideo", pix_fmt="bgr24", vframes=frames)
               .run_async(pipe_stdout=True, pipe_stderr=True, cmd=imageio_ffmpeg.get_ffmpeg_exe()))
    frame_bytes = width * height * 3
    try:
        while chunk := process.stdout.read(frame_bytes):
            if len(chunk) < frame_bytes:
                break
            yield np.frombuffer(chunk, np.uint8).reshape(height, width, 3)
    finally:
        process.stdout.close()
        process.stderr.read()
        process.wait()


def _encode_pyav(frames: Iterator[np.ndarray], width: int, height: int) -> int:
    """What engine.video_out does (BT.601 route): OpenCV I420 planes into libx264 in-process."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_type, stream.codec_context.thread_count = "FRAME", 0
        for index, bgr in enumerate(frames):
            frame = av.VideoFrame.from_numpy_buffer(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.tell()


def _encode_ffmpeg(frames: Iterator[np.ndarray], width: int, height: int) -> int:
    """ffmpeg-python's documented pattern: rawvideo bgr24 into the binary's stdin."""
    import ffmpeg
    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.mp4"
        process = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="bgr24", s=f"{width}x{height}", r=25)
                   .output(str(out), vcodec="libx264", crf=18, preset="veryfast", pix_fmt="yuv420p")
                   .overwrite_output()
                   .run_async(pipe_stdin=True, pipe_stderr=True, cmd=imageio_ffmpeg.get_ffmpeg_exe()))
        for bgr in frames:
            process.stdin.write(bgr.tobytes())
        process.stdin.close()
        process.stderr.read()
        process.wait()
        return out.stat().st_size


def _conversions(clip: Path) -> dict[str, float]:
    """Milliseconds per frame for each BGR ↔ YUV 4:2:0 conversion the reader and writer weigh."""
    bgr = next(_decode_pyav(clip, 1))
    threads = min(os.cpu_count() or 1, 8)
    accurate = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
    reformatter = VideoReformatter()

    def sws_to_yuv(flags: Interpolation | None) -> Callable[[], Any]:
        return lambda: reformatter.reformat(av.VideoFrame.from_numpy_buffer(bgr, format="bgr24"), format="yuv420p",
                                            dst_colorspace="itu709", dst_color_range=1, interpolation=flags,
                                            threads=threads)

    yuv = sws_to_yuv(accurate)()
    cases = {
        "bgr->yuv from_ndarray + sws (PyAV's implicit route)":
            lambda: av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format="yuv420p"),
        "bgr->yuv from_numpy_buffer + sws default": sws_to_yuv(None),
        "bgr->yuv from_numpy_buffer + sws ACCURATE_RND (writer, BT.709)": sws_to_yuv(accurate),
        "bgr->yuv cv2 BGR2YUV_I420 (writer, BT.601)":
            lambda: av.VideoFrame.from_numpy_buffer(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420), format="yuv420p"),
        "yuv->bgr sws (reader)": lambda: VideoReformatter().reformat(yuv, format="bgr24", threads=threads).to_ndarray(),
        "yuv->bgr cv2 YUV2BGR_I420": lambda: cv2.cvtColor(yuv.to_ndarray(), cv2.COLOR_YUV2BGR_I420),
    }
    return {name: round(_ms_per_call(fn), 2) for name, fn in cases.items()}


def _x264_threads(clip: Path, frames: int) -> dict[str, float]:
    """libx264 frames per second with PyAV's default slice threads vs frame threads."""
    source = list(_decode_pyav(clip, ENCODE_SOURCE_FRAMES))
    planes = [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420) for f in source]
    height, width = source[0].shape[:2]
    results = {}
    for thread_type in ("SLICE", "FRAME"):
        with av.open(io.BytesIO(), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.thread_type, stream.codec_context.thread_count = thread_type, 0
            start = time.perf_counter()
            for index in range(frames):
                frame = av.VideoFrame.from_numpy_buffer(planes[index % len(planes)], format="yuv420p")
                frame.pts = index
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            results[thread_type] = round(frames / (time.perf_counter() - start), 1)
    return results


def _ms_per_call(fn: Callable[[], Any], repeat: int = 30) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1000


def _install_sizes(site: Path | None) -> dict[str, float]:
    """Megabytes on disk of what each route needs installed (the bundled FFmpeg libraries or binary)."""
    def megabytes(*paths: Path) -> float:
        return round(sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file()) / 2**20, 1)

    av_root = Path(av.__file__).parent
    sizes = {"pyav (av + av.libs)": megabytes(av_root, av_root.parent / "av.libs")}
    if site:
        sizes["imageio-ffmpeg + ffmpeg-python"] = megabytes(site / "imageio_ffmpeg", site / "ffmpeg")
    return sizes


def _generate_clip(path: Path, frames: int) -> Path:
    """A 1080×1920 H.264 clip of moving noise blocks, in case no real clip is given."""
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (240, 135, 3), dtype=np.uint8), (1080, 1920))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "23", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 1080, 1920, "yuv420p"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(base, index * 4, axis=1), format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _print_table(results: dict[str, Any]) -> None:
    print(f"clip: {results['clip']}  frames: {results['frames']}  cpus: {results['cpus']}")
    print(f"{'route':22s} {'fps':>8s} {'peak RSS MB':>12s} {'(python':>8s} {'+ ffmpeg)':>9s}")
    for route, row in results["routes"].items():
        if "error" in row:
            print(f"{route:22s} error: {row['error']}")
            continue
        print(f"{route:22s} {row['fps']:8.1f} {row['peak_rss_mb']:12.1f} {row['python_rss_mb']:8.1f} "
              f"{row['ffmpeg_rss_mb']:9.1f}")
    print("conversion, ms per frame:")
    for name, ms in results["conversions_ms"].items():
        print(f"  {name:65s} {ms:7.2f}")
    print("libx264 fps by thread type:", results["x264_threads_fps"])
    print("installed size, MB:", results["install_mb"])


if __name__ == "__main__":
    main()
