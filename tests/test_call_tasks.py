"""Structured concurrency (callbot/tasks.py): nothing spawned for a call outlives it, and a
handler's failure cancels its own call's work only. Real bots on a relay on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from callbot import Bot, Call, CallConfig, Incoming
from callbot.tasks import END_GRACE

from helpers import eventually

#: How the 100 calls end, in turn: (how, how many of every 10).
ENDINGS = [  # those that never connect are cheap: they carry the count
    ("caller_hangs_up_ringing", 4),
    ("declined", 2),
    ("caller_hangs_up", 1),
    ("callee_hangs_up", 1),
    ("handler_raises", 1),
    ("peer_vanishes", 1),
]


async def _linger(*_: Any) -> None:
    """A helper that would run for an hour: only the call's end may stop it."""
    await asyncio.sleep(3600)


def _host(bot: Bot, reached: set[str]) -> None:
    """The callee: ends each call as its metadata says, with work lingering past the end."""

    @bot.on_incoming
    async def handle(incoming: Incoming) -> None:
        how = incoming.metadata["how"]
        reached.add(incoming.call_id)
        if how == "caller_hangs_up_ringing":
            await _linger()
        if how == "declined":
            await incoming.decline()
            await _linger()
        call = await incoming.accept()
        call.on("state", _linger)  # spawned at every change, the end's included
        await call.wait_connected(10)
        if how == "handler_raises":
            raise RuntimeError("handler bug (expected by the test)")
        if how == "callee_hangs_up":
            await call.hangup()
        await call.wait_ended()
        await _linger()


async def _place(caller: Bot, how: str, reached: set[str]) -> str | None:
    """One call from `caller`, ended `how`; the caller's end reason."""
    call = await caller.call("host", metadata={"how": how})
    if how == "caller_hangs_up_ringing":
        await eventually(lambda: call.id in reached, "the callee's handler")
        await call.hangup()
    elif how == "caller_hangs_up":
        await call.wait_connected(10)
        await call.hangup()
    elif how == "peer_vanishes":  # no hangup, no more media: the callee's media timeout ends it
        await call.wait_connected(10)
        pc = call.peer_connection
        assert pc is not None
        await pc.close()
    return await call.wait_ended(20)


async def _settled_task_count() -> int | None:
    """How many asyncio tasks are alive, once that stopped changing for a moment."""
    counts = []
    for _ in range(4):
        counts.append(len(asyncio.all_tasks()))
        await asyncio.sleep(0.1)
    return counts[0] if len(set(counts)) == 1 else None


@pytest.mark.timeout(300)
async def test_tasks_alive_after_100_calls_are_those_alive_before(make_bot) -> None:
    host = make_bot("host", config=CallConfig(media_timeout=1.0))
    reached: set[str] = set()
    _host(host, reached)
    caller = make_bot("alice", role="user")
    await host.start()
    await caller.start()
    warm_up = await caller.call("host", metadata={"how": "caller_hangs_up"})
    await warm_up.wait_connected(10)  # process-wide tasks (media clock...) start with a call
    await warm_up.hangup()
    await asyncio.sleep(END_GRACE)  # the warm-up call's lingering work is gone
    before = await eventually(_settled_task_count, "a settled task count")

    plan = list(itertools.chain.from_iterable([how] * n for how, n in ENDINGS))
    assert len(plan) == 10
    reasons: list[str | None] = []
    for _ in range(10):  # ten at a time
        reasons += await asyncio.gather(*(_place(caller, how, reached) for how in plan))

    assert None not in reasons and len(reasons) == 100
    assert host.active_calls == [] and caller.active_calls == []
    after = await eventually(
        _settled_task_count, "tasks back to their count before the calls",
        until=lambda count: count == before, timeout=END_GRACE + 20,
    )  # fmt: skip
    assert after == before


@pytest.mark.parametrize("where", ["incoming handler", "event handler"])
async def test_failing_handler_cancels_its_calls_helpers_not_anothers(make_bot, where) -> None:
    host = make_bot("host")
    helpers: dict[str, str] = {}  # call id -> "running" | "cancelled"
    calls: dict[str, Call] = {}

    async def helper(call_id: str) -> None:
        helpers[call_id] = "running"
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            helpers[call_id] = "cancelled"
            raise

    async def explode() -> None:
        raise RuntimeError("handler bug (expected by the test)")

    @host.on_incoming
    async def handle(incoming: Incoming) -> None:
        call = await incoming.accept()
        calls[call.id] = call
        call.on("helper", helper)
        call.emit("helper", call.id)  # runs in the call's task group
        await call.wait_connected(10)
        if incoming.metadata.get("crash"):
            if where == "incoming handler":
                raise RuntimeError("handler bug (expected by the test)")
            call.on("boom", explode)
            call.emit("boom")
        await call.wait_ended()

    caller = make_bot("alice", role="user")
    await host.start()
    await caller.start()
    good = await caller.call("host")
    await good.wait_connected(10)
    bad = await caller.call("host", metadata={"crash": True})
    assert await bad.wait_ended(10) == "remote_hangup"
    assert calls[bad.id].end_reason == "error"

    await eventually(lambda: helpers.get(bad.id) == "cancelled", "the failed call's helper")
    assert helpers[good.id] == "running" and good.state == "connected"
    await good.hangup()
    await eventually(
        lambda: helpers.get(good.id) == "cancelled", "the ended call's helper",
        timeout=END_GRACE + 10,
    )  # fmt: skip


async def test_stopping_a_bot_cancels_what_its_calls_left_running(make_bot) -> None:
    # as before task groups (the bot cancelled every handler task it had spawned): the calls'
    # groups live in the bot's, so stop() cancels them at once rather than after END_GRACE
    host = make_bot("host")
    lingering: list[str] = []

    @host.on_incoming
    async def handle(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.wait_ended()
        lingering.append("running")
        try:
            await _linger()
        finally:
            lingering.append("cancelled")

    caller = make_bot("alice", role="user")
    await host.start()
    await caller.start()
    call = await caller.call("host")
    await call.wait_connected(10)
    await host.stop()  # hangs the call up: its handler would linger END_GRACE, not more
    assert await call.wait_ended(10) == "remote_hangup"
    await eventually(lambda: lingering == ["running", "cancelled"], timeout=END_GRACE / 2)
