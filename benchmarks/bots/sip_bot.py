"""The bot of sip_density.py: every SIP call gets the prompt looped and is recorded to .wav.

Run by sip_density.py as `callbot run benchmarks/bots/sip_bot.py --sip ADDRESS --port P`;
BENCH_PROMPT, BENCH_RECORDINGS and BENCH_STATS (a directory) come from the environment, as for
bots/callbot_bot.py. Each process writes its figures to
BENCH_STATS/<pid>.json twice a second, and the SIP stack's final report of every call to
BENCH_STATS/calls.jsonl when the call ends.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _botstats import StatsWriter

from callbot import Bot, Incoming
from callbot.media.clock import AUDIO_TICKER

stats = StatsWriter(lambda: {"dropped": AUDIO_TICKER.dropped, "calls": len(bot.active_calls)})
bot = Bot("bench")
reports = Path(os.environ["BENCH_STATS"]) / "calls.jsonl"


@bot.on_incoming
async def serve(incoming: Incoming) -> None:
    stats.ensure_started()
    call = await incoming.accept()
    call.send_audio_file(stats.prompt, loop=True)
    call.record_incoming(audio_path=stats.recordings / f"{call.id}.wav")
    await call.wait_ended()
    report: dict[str, Any] = await call.stats()
    with reports.open("a") as out:
        out.write(json.dumps({"call": call.id, "sip": report.get("sip", {})}) + "\n")


@bot.on("ready")
def started(*_: object) -> None:
    stats.ensure_started()
