"""Child process for the SIGKILL test: records a looping call into every format, forever.

Prints RECORDING once media is being written, then `RECEIVED <seconds>` every 0.1 s: how much
video (by timestamps) has arrived, which is what the killed video files should hold.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")

from callbot.config import CallConfig
from callbot.direct import connect_direct
from callbot.testing import generate

AUDIO = ("wav", "ogg", "mp4", "webm", "mkv", "mp3")
VIDEO = ("mp4", "webm", "mkv")


async def main(out: Path) -> None:
    # the default picture size: on a busy 2-core machine three encoders at once fall behind,
    # which must cost frames, not the last seconds of the file
    size = (640, 480)
    clip = generate.write_video(out / "source.webm", seconds=1.0, size=size, tone=440.0)
    config = CallConfig(video_size=size)
    caller, callee = await connect_direct(video=True, caller_config=config, callee_config=config)
    recorders = [callee.record_incoming(audio_path=out / f"audio.{suffix}") for suffix in AUDIO] + [
        callee.record_incoming(video_path=out / f"video.{suffix}") for suffix in VIDEO
    ]
    seen = callee.video_frames()
    caller.send_video_file(clip, loop=True)
    while not all((r.audio or r.video).frames for r in recorders):  # type: ignore[union-attr]
        await asyncio.sleep(0.01)
    print("RECORDING", flush=True)
    await _report_received(seen)


async def _report_received(frames) -> None:  # type: ignore[no-untyped-def]
    """Print how many seconds of video (first to newest timestamp) arrived, every 0.1 s."""
    first = newest = None
    loop = asyncio.get_running_loop()
    reported = loop.time()
    async for frame in frames:
        newest = float(frame.pts * frame.time_base)
        first = newest if first is None else first
        if loop.time() - reported >= 0.1:
            print(f"RECEIVED {newest - first:.3f}", flush=True)
            reported = loop.time()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
