"""Caller side of the soak test: N calls to one bot, kept up for S seconds, then hung up.

Usage: soak_callers.py RELAY_URL STATE_DIR BOT_ID CALLS SECONDS PROMPT. Each call plays PROMPT
looped. Prints CONNECTED n, then DONE.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ.setdefault("CALLBOT_ICE_ADDRESSES", "127.0.0.1")

from callbot import Bot


async def main(
    url: str, state_dir: str, bot_id: str, count: int, seconds: float, prompt: str
) -> None:
    caller = Bot("soak-caller", server=url, role="user", state_dir=state_dir)
    await caller.start()
    calls = [await caller.call(bot_id) for _ in range(count)]
    await asyncio.gather(*(call.wait_connected(60) for call in calls))
    for call in calls:
        call.send_audio_file(prompt, loop=True)
    print(f"CONNECTED {len(calls)}", flush=True)
    await asyncio.sleep(seconds)
    ended = [call.end_reason for call in calls if call.state == "ended"]
    print(f"ENDED EARLY {len(ended)} {ended}", flush=True)
    await asyncio.gather(*(call.hangup() for call in calls))
    await caller.stop()
    print("DONE", flush=True)


if __name__ == "__main__":
    url, state_dir, bot_id, count, seconds, prompt = sys.argv[1:7]
    asyncio.run(main(url, state_dir, bot_id, int(count), float(seconds), prompt))
