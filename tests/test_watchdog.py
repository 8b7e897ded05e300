"""A handler that blocks the event loop is named in a WARNING (the call and how long), and
`call.run_blocking` keeps every other call's audio flowing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from callbot import Call, Incoming

BLOCK = 1.5


async def _block_while_another_call_listens(
    make_bot, tone: Path, block: Callable[[Call], Awaitable[None] | None]
) -> tuple[Call, float]:
    """Call a bot twice: the first call hears a tone, the second one's handler runs `block`.
    Returns the second call and the longest gap between audio frames the first call got."""
    bot = make_bot("worker")

    @bot.on_incoming
    async def handle(incoming: Incoming) -> None:
        call = await incoming.accept()
        if not incoming.metadata.get("block"):
            call.send_audio_file(tone, loop=True)
            return
        await call.wait_connected(10)
        await asyncio.sleep(0.3)  # the watchdog thread has seen the clock tick
        result = block(call)
        if result is not None:
            await result

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    listener = await alice.call("worker")
    await listener.wait_connected(10)
    arrivals: list[float] = []

    async def listen() -> None:
        async for _ in listener.audio_frames():
            arrivals.append(time.monotonic())

    listening = asyncio.ensure_future(listen())
    await asyncio.sleep(0.5)
    blocker = await alice.call("worker", metadata={"block": True})
    await blocker.wait_connected(10)
    await asyncio.sleep(BLOCK + 1.5)
    listening.cancel()
    assert len(arrivals) > 50  # audio flowed
    return blocker, max(b - a for a, b in itertools.pairwise(arrivals))


def _blocked_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "callbot.watchdog"]


async def test_a_handler_blocking_the_loop_is_named_with_how_long(
    make_bot, tone_file, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="callbot.watchdog")
    tone = tone_file(".wav", 440.0, seconds=1.0)

    blocker, gap = await _block_while_another_call_listens(
        make_bot, tone, lambda call: time.sleep(BLOCK)
    )

    assert gap >= BLOCK - 0.3  # the other call's audio stopped meanwhile
    (warning,) = [w for w in _blocked_warnings(caplog) if blocker.id in w]
    held = float(re.search(r"blocked for ([\d.]+) s", warning).group(1))  # type: ignore[union-attr]
    assert held >= 1.0, warning
    assert "run_blocking" in warning


async def test_run_blocking_keeps_other_calls_audio_flowing(make_bot, tone_file, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="callbot.watchdog")
    tone = tone_file(".wav", 440.0, seconds=1.0)
    done: list[str] = []

    def work(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    async def block(call: Call) -> None:
        done.append(await call.run_blocking(work, BLOCK))

    blocker, gap = await _block_while_another_call_listens(make_bot, tone, block)

    assert done == ["done"]
    assert gap < BLOCK / 2  # no stall anywhere near the blocking work's length
    assert not [w for w in _blocked_warnings(caplog) if blocker.id in w]
