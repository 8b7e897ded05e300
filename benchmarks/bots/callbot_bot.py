"""The callbot side of density.py: every call gets the prompt looped and is recorded to .ogg.

Run by density.py as `callbot run benchmarks/bots/callbot_bot.py --server URL --workers N`;
BENCH_PROMPT, BENCH_RECORDINGS and BENCH_STATS (a directory) come from the environment. Each
process writes its figures to BENCH_STATS/<pid>.json twice a second. With BENCH_VIDEO set (a
silent video clip), that clip is sent too, and received video is recorded to .webm.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _botstats import StatsWriter

from callbot import Bot, Incoming
from callbot.media.clock import AUDIO_TICKER

VIDEO = os.environ.get("BENCH_VIDEO")
stats = StatsWriter(lambda: {"dropped": AUDIO_TICKER.dropped, "calls": len(bot.active_calls)})
bot = Bot("bench")


@bot.on_incoming
async def serve(incoming: Incoming) -> None:
    stats.ensure_started()
    call = await incoming.accept(video=bool(VIDEO))
    call.send_audio_file(stats.prompt, loop=True)
    if VIDEO:
        call.send_video_file(VIDEO, loop=True)
        call.record_incoming(
            audio_path=stats.recordings / f"{call.id}.ogg",
            video_path=stats.recordings / f"{call.id}.webm",
        )
        return
    call.record_incoming(audio_path=stats.recordings / f"{call.id}.ogg")


@bot.on("ready")
def started(*_: object) -> None:
    stats.ensure_started()
