"""What recording received video costs: the process's CPU per call while N calls record, less
the same calls not recording, and the size of what they write.

N in-process call pairs carry 640x480 30 fps VP8 (a looping moving-pattern clip, sent as its
cached packets so the sending side costs little). After a warm-up the process's CPU (user +
system, all threads: the event loop and the write pool) is read over a window with no
recording, then over a window while every callee records its received video to a format, then
without recording again, and so on: each format's cost is its window less the two around it.

    python benchmarks/video_record.py                  # 4 calls, 10 s windows
    python benchmarks/video_record.py --calls 8 --seconds 20 --formats webm,mp4

To compare with an older callbot, run the same script with that checkout first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path

from _common import cpu_seconds, machine, table

from callbot.call import Call
from callbot.config import CallConfig
from callbot.media import generate
from callbot.signaling.direct import connect_direct

SIZE = (640, 480)


async def _window(seconds: float) -> float:
    """The process's CPU over `seconds` of wall-clock time, in % of one core."""
    start, cpu = time.monotonic(), cpu_seconds([os.getpid()])
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds([os.getpid()]) - cpu) / (time.monotonic() - start)


async def _record(callees: list[Call], out: Path, suffix: str, seconds: float) -> list[object]:
    """Every callee records its received video to `suffix` for a window: % CPU per call,
    MB written per call, frames dropped in all (by a writer slower than real time)."""
    recordings = [
        callee.record_incoming(video_path=out / f"{i}{suffix}") for i, callee in enumerate(callees)
    ]
    await asyncio.sleep(1.0)  # the encoders (re-encoding formats) have started
    cpu = await _window(seconds)
    await asyncio.gather(*(r.stop() for r in recordings))
    size = sum((out / f"{i}{suffix}").stat().st_size for i in range(len(callees))) / 2**20
    dropped = sum(r.video.dropped for r in recordings if r.video is not None)
    passthrough = all(r.video is not None and r.video.passthrough for r in recordings)
    return [suffix, passthrough, cpu, size / len(callees), dropped]


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
    print(machine())
    quiet = ", ".join(f"{cpu / calls:.2f}" for cpu in idle)
    print(f"{calls} calls of 640x480 30 fps VP8; not recording: {quiet} % per call")
    print(f"{seconds:.0f} s windows; recording = cpu while recording - mean of the windows around")
    headers = ["format", "as received", "cpu/call %", "recording/call %", "MB/call", "dropped"]
    cells = [
        [f, p, cpu / calls, (cpu - (idle[i] + idle[i + 1]) / 2) / calls, mb, d]
        for i, (f, p, cpu, mb, d) in enumerate(rows)
    ]
    print(table(headers, cells))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--formats", default="webm,mkv,mp4")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.seconds, args.formats.split(",")))
