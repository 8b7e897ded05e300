"""What recording received video costs: the process's CPU per call while N calls record, less
the same calls not recording, and the size of what they write.

N in-process call pairs carry 640x480 30 fps VP8 (a looping moving-pattern clip, sent as its
cached packets so the sending side costs little). After a warm-up the process's CPU (user +
system, all threads: the event loop and the write pool) is read over a window with no
recording, then over a window while every callee records its received video to a format, then
without recording again, and so on: each format's cost is its window less the two around it.
On a shared machine that difference is noisy; so one call's recording is then written again by
each writer alone (stored as received, and re-encoded as before), its CPU time measured.

    python benchmarks/video_record.py                  # 4 calls, 10 s windows
    python benchmarks/video_record.py --calls 8 --seconds 20 --formats webm,mp4

The "before" figures in docs/performance.md are the in-call part of this script run against an
older callbot (its checkout first on PYTHONPATH, the replay part removed: it needs today's writers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import tempfile
import time
from pathlib import Path

import av
import av.error
from _common import cpu_seconds, machine, rss_mb, table

from callbot.call import Call
from callbot.config import CallConfig
from callbot.direct import connect_direct
from callbot.media import vp8
from callbot.media.writers import (
    VIDEO_CLOCK,
    ContainerWriter,
    FrameWriter,
    VideoItem,
    Vp8PacketWriter,
)
from callbot.testing import generate

SIZE = (640, 480)


async def _window(seconds: float) -> float:
    """The process's CPU over `seconds` of wall-clock time, in % of one core."""
    start, cpu = time.monotonic(), cpu_seconds([os.getpid()])
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds([os.getpid()]) - cpu) / (time.monotonic() - start)


async def _record(callees: list[Call], out: Path, suffix: str, seconds: float) -> list[object]:
    """Every callee records its received video to `suffix` for a window: % CPU, MB written
    per call, frames dropped in all (by a writer slower than real time), memory growth per
    call (MB)."""
    rss = rss_mb([os.getpid()])
    recordings = [
        callee.record_incoming(video_path=out / f"{i}{suffix}") for i, callee in enumerate(callees)
    ]
    await asyncio.sleep(1.0)  # the encoders (re-encoding formats) have started
    cpu = await _window(seconds)
    rss = (rss_mb([os.getpid()]) - rss) / len(callees)
    await asyncio.gather(*(r.stop() for r in recordings))
    size = sum((out / f"{i}{suffix}").stat().st_size for i in range(len(callees))) / 2**20
    dropped = sum(r.video.dropped for r in recordings if r.video is not None)
    passthrough = all(r.video is not None and r.video.passthrough for r in recordings)
    return [suffix, passthrough, cpu, size / len(callees), dropped, rss]


def _replay(received: Path, out: Path) -> list[list[object]]:
    """One call's received video (a recording stored as received) written again by each
    writer, timed alone: what recording costs per call, free of the calls' noise. The frames
    are decoded beforehand: a call decodes them anyway."""
    with av.open(str(received)) as container:
        stream = container.streams.video[0]
        packets = [
            (bytes(p), _clock(p.pts * p.time_base)) for p in container.demux(stream) if p.size
        ]
    with av.open(str(received)) as container:
        frames = list(container.decode(container.streams.video[0]))
    for frame in frames:  # as the recorder stamps them
        frame.pts, frame.time_base = _clock(frame.time), fractions.Fraction(1, VIDEO_CLOCK)
    seconds = (packets[-1][1] - packets[0][1]) / VIDEO_CLOCK + 1 / 30
    rows: list[list[object]] = []
    for suffix, as_received in (
        (".webm", True),
        (".webm", False),
        (".mkv", False),
        (".mp4", False),
    ):
        path = out / f"replay-{len(rows)}{suffix}"
        cpu = time.process_time()  # all threads: the encoders' own too
        if as_received:
            writer: FrameWriter = Vp8PacketWriter(path, SIZE)
            for payload, pts in packets:
                writer.write(VideoItem(payload, pts, vp8.is_keyframe(payload)))
        else:
            writer = ContainerWriter(path, "video", SIZE)
            for frame in frames:
                writer.write(frame)
        writer.close()
        used = time.process_time() - cpu
        mb = path.stat().st_size / 2**20
        rows.append([suffix, as_received, 100 * used / seconds, mb * 10 / seconds])
    return rows


def _clock(seconds: float) -> int:
    return round(seconds * VIDEO_CLOCK)


async def main(calls: int, seconds: float, formats: list[str]) -> None:
    config = CallConfig(video_size=SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        clip = generate.write_video(out / "clip.webm", seconds=3.0, size=SIZE, fps=30)
        pairs = [
            await connect_direct(video=True, caller_config=config, callee_config=config)
            for _ in range(calls)
        ]
        try:
            for caller, _ in pairs:
                caller.send_video_file(clip, loop=True)
            await asyncio.sleep(3.0)  # warm-up
            idle = [await _window(seconds)]
            rows = []
            for n, suffix in enumerate(formats):  # each recording window between two quiet ones
                (out / str(n)).mkdir()
                rows.append(
                    await _record([c for _, c in pairs], out / str(n), f".{suffix}", seconds)
                )
                idle.append(await _window(seconds))
        finally:
            for call in (c for pair in pairs for c in pair):
                with contextlib.suppress(Exception):
                    await call.hangup()
        stored = [p for p in out.glob("*/*.*") if p.suffix in (".webm", ".mkv")]
        try:  # the fullest recording stored as received (a short run may have an empty one)
            replayed: list[list[object]] | None = _replay(max(stored, key=_size), out)
        except (ValueError, IndexError, av.error.FFmpegError):
            replayed = None
    print(machine())
    quiet = ", ".join(f"{cpu / calls:.2f}" for cpu in idle)
    print(f"{calls} calls of 640x480 30 fps VP8; not recording: {quiet} % per call")
    print(f"{seconds:.0f} s windows; recording = cpu while recording - mean of the windows around")
    headers = ["format", "as received", "cpu/call %", "recording/call %", "MB/call", "dropped"]
    headers.append("rss/call MB")
    cells = [
        [f, p, cpu / calls, (cpu - (idle[i] + idle[i + 1]) / 2) / calls, mb, d, rss]
        for i, (f, p, cpu, mb, d, rss) in enumerate(rows)
    ]
    print(table(headers, cells))
    if replayed is None:
        print("\nno .webm/.mkv recording holds video to replay (none received in time)")
        return
    print(f"\none call's {seconds:.0f} s of received video written again by each writer, alone:")
    print(table(["format", "as received", "cpu %", "MB per 10 s"], replayed))


def _size(path: Path) -> int:
    return path.stat().st_size


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--formats", default="webm,mkv,mp4")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds, args.formats.split(",")))
