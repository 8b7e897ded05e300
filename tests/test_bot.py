"""Bots through a real relay on 127.0.0.1: answering, declining, failures, pools, restarts."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest

from callbot import Bot, CallConfig, CallError, Incoming
from callbot.identity import AuthError
from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.signaling.state import RelayState

from helpers import collect_frames, eventually


def _echo(bot: Bot) -> None:
    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.set_audio_source(call.remote_track("audio"))


async def test_call_through_the_relay_carries_audio_both_ways(make_bot, tone_file) -> None:
    source = tone_file(".wav", 440.0, seconds=2.0)
    echo = make_bot("echo")
    _echo(echo)
    alice = make_bot("alice", role="user")
    await echo.start()
    await alice.start()
    rings: list[str] = []

    call = await alice.call("echo", metadata={"ticket": 42})
    call.on("ringing", lambda: rings.append("ring"))
    await call.wait_connected(10)
    frames = call.audio_frames()
    call.send_audio_file(source)
    received = await collect_frames(frames, 2.5)

    assert rings == ["ring"]
    assert abs(analysis.dominant_frequency(received) - 440.0) <= 5
    (answered,) = echo.active_calls
    assert answered.metadata == {"ticket": 42} and answered.peer == "alice"
    await call.hangup()
    assert await answered.wait_ended(5) == "remote_hangup"
    assert echo.active_calls == [] and alice.active_calls == []


async def test_failing_handler_ends_only_its_call(make_bot, caplog) -> None:
    bot = make_bot("moody")
    seen: list[str] = []

    @bot.on_incoming
    async def sometimes_crash(incoming: Incoming) -> None:
        await incoming.accept()
        seen.append(incoming.call_id)
        if incoming.metadata.get("crash"):
            raise RuntimeError("handler bug")

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    good = await alice.call("moody")
    await good.wait_connected(10)
    with caplog.at_level(logging.ERROR, logger="callbot.bot"):
        bad = await alice.call("moody", metadata={"crash": True})
        assert await bad.wait_ended(10) == "remote_hangup"
    crashed = [c for c in seen if c == bad.id]
    assert crashed and any(bad.id in r.getMessage() for r in caplog.records)
    assert bad.remote_end_reason == "error"
    await asyncio.sleep(0.3)
    assert good.state == "connected"  # the other call goes on
    await good.hangup()


async def test_several_handlers_all_run_and_accept_once(make_bot) -> None:
    bot = make_bot("multi")
    calls = []

    @bot.on_incoming
    async def first(incoming: Incoming) -> None:
        calls.append(await incoming.accept())

    @bot.on_incoming
    async def second(incoming: Incoming) -> None:
        calls.append(await incoming.accept())

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    call = await alice.call("multi")
    await call.wait_connected(10)
    await eventually(lambda: len(calls), "both handlers to run", until=lambda count: count == 2)
    assert len(calls) == 2 and calls[0] is calls[1]
    await call.hangup()


@pytest.mark.parametrize("reason", ["busy", "decline"])
async def test_declined_calls(make_bot, reason: str) -> None:
    bot = make_bot("picky")

    @bot.on_incoming
    async def refuse(incoming: Incoming) -> None:
        await incoming.decline(reason)

    alice = make_bot("alice", role="user")
    await bot.start()
    await alice.start()
    call = await alice.call("picky")
    assert await call.wait_ended(5) == f"rejected:{reason}"


async def test_offline_user_fails_fast(make_bot) -> None:
    alice = make_bot("alice", role="user")
    await alice.start()
    started = time.monotonic()
    call = await alice.call("nobody")
    with pytest.raises(CallError) as caught:
        await call.wait_connected(5)
    assert caught.value.code == "user_offline"
    assert time.monotonic() - started < 1.0
    assert call.end_reason == "failed"


async def test_unanswered_call_ends_no_answer(relay: Relay, make_bot) -> None:
    bot = make_bot("sleepy")

    @bot.on_incoming
    async def ignore(incoming: Incoming) -> None:
        return None  # neither accepts nor declines: it just rings

    alice = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user",
                config=CallConfig(ring_timeout=1.0))  # fmt: skip
    await bot.start()
    await alice.start()
    try:
        call = await alice.call("sleepy")
        assert await call.wait_ended(5) == "no_answer"
        await eventually(lambda: bot.active_calls, "the callee's end", until=lambda c: c == [])
        assert bot.active_calls == []  # the callee was told too
    finally:
        await alice.stop()


async def test_pool_shares_calls_least_loaded_and_is_busy_when_full(make_bot) -> None:
    workers = [make_bot("pool", max_calls=2) for _ in range(2)]
    for worker in workers:
        _echo(worker)
    alice = make_bot("alice", role="user")
    await asyncio.gather(*(w.start() for w in workers), alice.start())

    calls = []
    for _ in range(4):
        call = await alice.call("pool")
        await call.wait_connected(10)
        calls.append(call)
    assert sorted(len(w.active_calls) for w in workers) == [2, 2]
    extra = await alice.call("pool")
    assert await extra.wait_ended(5) == "rejected:busy"

    await calls[0].hangup()
    await eventually(
        lambda: sorted(len(w.active_calls) for w in workers),
        "a slot to free up",
        until=lambda counts: counts == [1, 2],
    )
    again = await alice.call("pool")
    await again.wait_connected(10)
    assert sorted(len(w.active_calls) for w in workers) == [2, 2]
    await asyncio.gather(*(c.hangup() for c in [*calls[1:], again]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_relay_restart_mid_call(tmp_path: Path, tone_file) -> None:
    source = tone_file(".wav", 440.0, seconds=1.0)
    port, state = _free_port(), tmp_path / "state"
    relay = await Relay(port=port, state_dir=state).start()
    echo = Bot("echo", server=relay.url, token=relay.mint("echo", role="bot"))
    _echo(echo)
    alice = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user")
    try:
        await echo.start()
        await alice.start()
        call = await alice.call("echo")
        await call.wait_connected(10)
        call.send_audio_file(source, loop=True)
        frames = call.audio_frames()
        await collect_frames(frames, 0.5)

        await relay.stop()  # the relay goes away; media is peer to peer and keeps flowing
        during = await collect_frames(frames, 1.5)
        assert abs(analysis.dominant_frequency(during) - 440.0) <= 5
        assert not alice.connected

        relay = await Relay(port=port, state_dir=state).start()
        await eventually(lambda: alice.connected and echo.connected, "both back", timeout=15)

        (answered,) = echo.active_calls
        await call.hangup()  # still reaches the other side through the new relay
        assert await answered.wait_ended(5) == "remote_hangup"
    finally:
        await alice.stop()
        await echo.stop()
        await relay.stop()


async def test_revoked_bot_does_not_reconnect(relay: Relay, make_bot) -> None:
    bot = make_bot("revokee")
    await bot.start()
    state = RelayState(relay.state.directory)
    state.revoke("revokee")
    state.close()
    client = bot._client
    assert client is not None
    await eventually(lambda: client.fatal_error, "the fatal error")
    assert isinstance(client.fatal_error, AuthError)
    assert client.fatal_error.code == "session_revoked"
    await asyncio.sleep(1.5)
    assert client.reconnects == 0 and not bot.connected


async def test_token_is_refreshed_before_expiry(relay: Relay) -> None:
    refreshed: list[str] = []

    async def fresh_token() -> str:
        token = relay.mint("shortlived", 60, role="bot")
        refreshed.append(token)
        return token

    bot = Bot("shortlived", server=relay.url, token=relay.state.mint("shortlived", 3, "bot"),
              on_token_expiring=fresh_token)  # fmt: skip
    await bot.start()
    try:
        await asyncio.sleep(4.0)  # past the first token's expiry
        assert refreshed
        assert bot.connected and bot._client is not None
        assert bot._client.fatal_error is None and bot._client.reconnects == 0
    finally:
        await bot.stop()


async def test_bot_without_server_starts_an_embedded_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLBOT_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("CALLBOT_SERVER", raising=False)
    bot = Bot("standalone")
    _echo(bot)
    await bot.start()
    try:
        assert bot.relay is not None and bot.server == "ws://127.0.0.1:8765/ws"
        caller = Bot("alice", server=bot.server, role="user")  # mints from the same state dir
        await caller.start()
        call = await caller.call("standalone")
        await call.wait_connected(10)
        await caller.stop()
    finally:
        await bot.stop()
