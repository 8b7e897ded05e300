"""Ended calls are freed by reference counting: no reference cycle is left for a full garbage
collection to find, so a bot's memory stays flat however many calls it serves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Iterator

from aiortc import RTCPeerConnection

from callbot import Bot, Call, Incoming

#: Calls measured after the warm-up. 200 in a row were measured once (see the commit message);
#: 40 keep this test short on a loaded machine and still show a leak of ~850 objects per call.
CALLS = 40
WARM_UP = 5


def _rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def _no_automatic_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _cyclic_garbage() -> list[object]:
    """What only the cycle collector could free (collected here, for inspection)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _short_call(alice: Bot, bot: Bot) -> None:
    call = await alice.call("answerer")
    await call.wait_connected(10)
    await call.hangup()
    while bot.active_calls:
        await asyncio.sleep(0.01)


async def test_ended_calls_leave_no_reference_cycles(make_bot) -> None:
    bot = make_bot("answerer")

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        call.on("ended", lambda reason, duration: None)  # handlers are released at the end
        call.on("dtmf", lambda digit: call.send_data(digit))  # even one holding the call

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    for _ in range(WARM_UP):
        await _short_call(alice, bot)
    with _no_automatic_gc():
        objects, rss = len(gc.get_objects()), _rss()
        for _ in range(CALLS):
            await _short_call(alice, bot)
        await asyncio.sleep(0.2)  # the last call's tasks finish
        grown_objects, grown_rss = len(gc.get_objects()) - objects, _rss() - rss
        garbage = _cyclic_garbage()
    leaked = [o for o in garbage if isinstance(o, Call | RTCPeerConnection)]
    assert leaked == [], f"{len(leaked)} calls/peer connections in cycles ({len(garbage)} objects)"
    assert grown_objects < CALLS * 20, grown_objects  # ~850 per call when calls stay in cycles
    assert grown_rss < 4_000_000, grown_rss  # ~270 KB per call when they do
