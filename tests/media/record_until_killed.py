"""Child process for the SIGKILL test: records a looping call into every format, forever.

Prints RECORDING once media is being written, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")

from callbot.config import CallConfig
from callbot.media import generate
from callbot.signaling.direct import connect_direct

AUDIO = ("wav", "ogg", "mp4", "webm", "mkv", "mp3")
VIDEO = ("mp4", "webm", "mkv")


async def main(out: Path) -> None:
    # a small picture: three video encoders at once must keep up even on a busy 2-core machine
    size = (320, 240)
    clip = generate.write_video(out / "source.webm", seconds=1.0, size=size, tone=440.0)
    config = CallConfig(video_size=size)
    caller, callee = await connect_direct(video=True, caller_config=config, callee_config=config)
    recorders = [callee.record_incoming(audio_path=out / f"audio.{suffix}") for suffix in AUDIO] + [
        callee.record_incoming(video_path=out / f"video.{suffix}") for suffix in VIDEO
    ]
    caller.send_video_file(clip, loop=True)
    while not all((r.audio or r.video).frames for r in recorders):  # type: ignore[union-attr]
        await asyncio.sleep(0.01)
    print("RECORDING", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
