"""Soak: 20 concurrent calls through the relay for 50 s, with a prompt playing and a
recording into each. Resource use must stay flat during the calls and return to where it was
once they end. (Marked slow; CI runs it too.)"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from callbot import Bot, Call, Incoming
from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import eventually

CALLS = 20
SECONDS = 50.0  # 30 s of warm-up, then a 20 s window for the flat-resources check
#: Bounds (stated here, checked below).
RSS_GROWTH_DURING_CALLS_MB = 40  # from 30 s into the calls to their end
RSS_LEFT_AFTER_MB = 60  # above the baseline, once every call ended (allocator caches)
FDS_LEFT_AFTER = 8
TASKS_LEFT_AFTER = 4


def _resources() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return {
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(asyncio.all_tasks()),
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_twenty_calls_for_50_seconds(relay: Relay, tmp_path: Path) -> None:
    prompt = generate.write_tone(tmp_path / "prompt.wav", 440.0, seconds=3.0)
    callers_prompt = generate.write_tone(tmp_path / "callers.wav", 660.0, seconds=2.0)
    recordings = tmp_path / "recordings"
    bot = Bot("soak", server=relay.url, token=relay.mint("soak", role="bot"))
    calls: list[Call] = []

    @bot.on_incoming
    async def serve(incoming: Incoming) -> None:
        call = await incoming.accept()
        calls.append(call)
        call.send_audio_file(prompt, loop=True)
        call.record_incoming(audio_path=recordings / f"{call.id}.ogg")

    await bot.start()
    await asyncio.sleep(0.5)
    baseline = _resources()
    callers = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("soak_callers.py")), relay.url,
         str(relay.state.directory), "soak", str(CALLS), str(SECONDS), str(callers_prompt)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert callers.stdout is not None
        line = await asyncio.to_thread(callers.stdout.readline)
        assert line.strip() == f"CONNECTED {CALLS}", line
        await asyncio.sleep(30)
        settled = _resources()
        samples = [settled]
        while callers.poll() is None and len(samples) < 20:
            await asyncio.sleep(5)
            samples.append(_resources())
        output = await asyncio.to_thread(callers.communicate, timeout=120)
        assert "ENDED EARLY 0" in output[0], output[0]
        await eventually(lambda: bot.active_calls, "the bot's calls to end", until=lambda c: not c)
        await asyncio.sleep(1.0)
        after = _resources()
    finally:
        if callers.poll() is None:
            callers.kill()
        callers.wait(10)
        await bot.stop()

    peak = max(s["rss_mb"] for s in samples)
    print(f"baseline {baseline}, settled {settled}, peak rss {peak:.0f} MB, after {after}")
    assert len(calls) == CALLS and all(c.end_reason == "remote_hangup" for c in calls)
    assert peak - settled["rss_mb"] < RSS_GROWTH_DURING_CALLS_MB
    assert after["rss_mb"] - baseline["rss_mb"] < RSS_LEFT_AFTER_MB
    assert after["fds"] - baseline["fds"] <= FDS_LEFT_AFTER
    assert after["tasks"] - baseline["tasks"] <= TASKS_LEFT_AFTER
    # every call was recorded whole, and the recordings are playable and hold the callers' tone
    for call in calls:
        clip = analysis.load_audio(recordings / f"{call.id}.ogg")
        seconds = analysis.active_seconds(clip, threshold_db=-40)
        assert seconds > SECONDS - 10, (call.id, seconds)
        middle = clip.slice(clip.duration / 2, clip.duration / 2 + 10)
        assert abs(analysis.dominant_frequency(middle) - 660) < 5
