"""The density benchmark's per-call verdict (benchmarks/checker.py), measured the way its callers
measure (density_callers.Window) on real calls: bots that send silence, stop sending or stutter
fail it, each with its reason; a healthy bot passes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from callbot import Call, Incoming
from callbot.config import CallConfig

from helpers import drop_outgoing_rtp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from checker import CallMeasurement, Limits, check_call
from density_callers import Window

PROMPT_HZ = 440.0
WARMUP = 0.5  # s between connected and the window
WINDOW = 3.0
STOP_AFTER = 1.5  # s after answering: about 1 s into the window
#: The benchmark's limits, with room for a loaded test machine (a stall of a few hundred ms
#: costs packets and tone); the broken bots miss them by far: seconds without either.
LIMITS = Limits(missing_share=0.1, max_gap=0.6, max_tone_gap=0.3)

Behaviour = Callable[[Call, Path], Awaitable[None]]


async def healthy(call: Call, prompt: Path) -> None:
    call.send_audio_file(prompt, loop=True)


async def silent(call: Call, prompt: Path) -> None:
    """Plays the prompt, muted: silence packets flow at the full rate."""
    call.send_audio_file(prompt, loop=True)
    await call.mute("audio")


async def stops(call: Call, prompt: Path) -> None:
    """Plays the prompt, then sends no more packets (the call stays up)."""
    call.send_audio_file(prompt, loop=True)
    await asyncio.sleep(STOP_AFTER)
    drop_outgoing_rtp(call, 1.0)


async def stutters(call: Call, prompt: Path) -> None:
    """Plays the prompt 0.6 s at a time, pausing 0.8 s in between (silence meanwhile)."""
    while call.state != "ended":
        playback = call.send_audio_file(prompt, loop=True)
        await asyncio.sleep(0.6)
        playback.stop()
        await asyncio.sleep(0.8)


BEHAVIOURS: dict[str, Behaviour] = {
    "healthy": healthy,
    "silent": silent,
    "stops": stops,
    "stutters": stutters,
}


async def test_broken_bots_fail_the_checker_and_a_healthy_one_passes(make_bot, tone_file) -> None:
    prompt = tone_file(frequency=PROMPT_HZ, seconds=3.0)
    tasks: set[asyncio.Task[None]] = set()
    for name, behaviour in BEHAVIOURS.items():
        bot = make_bot(f"bench-{name}")

        async def serve(incoming: Incoming, behaviour: Behaviour = behaviour) -> None:
            call = await incoming.accept()
            tasks.add(asyncio.ensure_future(behaviour(call, prompt)))

        bot.on_incoming(serve)
        await bot.start()
    caller = make_bot("bench-caller", role="user", config=CallConfig(media_timeout=0))
    await caller.start()
    try:
        calls = await asyncio.gather(*(caller.call(f"bench-{n}") for n in BEHAVIOURS))
        await asyncio.gather(*(call.wait_connected(20) for call in calls))
        await asyncio.sleep(WARMUP)
        window = Window(list(calls))
        await asyncio.sleep(WINDOW)
        window.close()
        measured = window.measurements(PROMPT_HZ)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
    verdicts = {name: check_call(m, LIMITS) for name, m in zip(BEHAVIOURS, measured, strict=True)}

    assert verdicts["healthy"] == []
    assert any("no prompt tone" in r for r in verdicts["silent"]), verdicts
    assert any("packets of" in r for r in verdicts["stops"]), verdicts
    assert any("no packet for" in r for r in verdicts["stops"]), verdicts
    assert any("prompt tone missing" in r for r in verdicts["stutters"]), verdicts


def _steady(start: float, end: float, stop: float | None = None) -> CallMeasurement:
    """A call receiving the prompt every 20 ms from `start` until `stop` (default: the end)."""
    last = end if stop is None else stop
    arrivals = [start + 0.01 + 0.02 * i for i in range(round((last - start) / 0.02))]
    blocks = round((end - start) / 0.1)
    tone = [-9.0 if start + 0.1 * (i + 1) <= last else -120.0 for i in range(blocks)]
    return CallMeasurement(start, end, arrivals, tone)


def test_a_stream_stopping_mid_window_fails_though_it_had_no_gap_while_it_lasted() -> None:
    # what fooled the benchmark before: gaps were counted between the first and last packet
    assert check_call(_steady(100.0, 120.0)) == []
    reasons = check_call(_steady(100.0, 120.0, stop=109.0))
    assert any(r.startswith("450 packets of 1000 expected") for r in reasons), reasons
    assert any("no packet for 11.01 s" in r for r in reasons), reasons
    assert any("prompt tone missing in 110 of 200 blocks" in r for r in reasons), reasons
