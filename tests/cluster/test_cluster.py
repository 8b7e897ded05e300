"""Relay nodes sharing routing over a real Redis: calls across nodes with real media, tokens
and revocations cluster-wide, and a clear error when Redis is not there."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from redis_server import free_port
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from callbot import Bot, Incoming
from callbot.cli import main
from callbot.identity import AuthError
from callbot.media import analysis
from callbot.signaling import backplane
from callbot.signaling.backplane import BackplaneError, RedisBackplane, connect
from callbot.signaling.relay import Relay
from callbot.signaling.state import RelayState

from helpers import collect_frames


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _echo(bot: Bot) -> None:
    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.set_audio_source(call.remote_track("audio"))


async def test_call_from_one_node_to_a_bot_on_another_carries_audio(
    nodes, cluster_bot, tone_file, redis_url: str
) -> None:
    a, b = await nodes("a"), await nodes("b")
    echo = cluster_bot(b, "echo")
    _echo(echo)
    alice = cluster_bot(a, "alice", role="user", minted_by=b)  # one secret for the cluster
    await echo.start()
    await alice.start()
    assert await _until(lambda: a.core.sessions_of("echo") == 1)
    rings: list[str] = []

    call = await alice.call("echo", metadata={"ticket": 7})
    call.on("ringing", lambda: rings.append("ring"))
    await call.wait_connected(10)
    frames = call.audio_frames()
    call.send_audio_file(tone_file(".wav", 440.0, seconds=2.0))
    received = await collect_frames(frames, 2.5)

    assert rings == ["ring"]
    assert abs(analysis.dominant_frequency(received) - 440.0) <= 5
    (answered,) = echo.active_calls
    assert answered.metadata == {"ticket": 7} and answered.peer == "alice"
    assert (a.core.call_count, b.core.call_count) == (1, 0)  # the caller's node owns it
    redis = await connect(redis_url)
    try:
        assert await redis.get(f"callbot:call:{call.id}") == b"node-a"
        assert 0 < await redis.pttl(f"callbot:call:{call.id}") <= 5000
        await call.hangup()
        assert await answered.wait_ended(5) == "remote_hangup"
        assert await _until(lambda: a.core.call_count == 0)
        for _ in range(50):  # the owner key goes with the call
            if not await redis.exists(f"callbot:call:{call.id}"):
                break
            await asyncio.sleep(0.02)
        assert not await redis.exists(f"callbot:call:{call.id}")
    finally:
        await redis.aclose()


async def test_bot_hangup_crosses_back_and_node_stop_is_seen(nodes, cluster_bot) -> None:
    a, b = await nodes("a"), await nodes("b")
    bot = cluster_bot(b, "quick")

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await asyncio.sleep(0.5)
        await call.hangup()

    caller = cluster_bot(a, "carol", role="user")
    await bot.start()
    await caller.start()
    assert await _until(lambda: a.core.sessions_of("quick") == 1)
    call = await caller.call("quick")
    await call.wait_connected(10)
    assert await call.wait_ended(10) == "remote_hangup"

    await bot.stop()
    assert await _until(lambda: a.core.sessions_of("quick") == 0)
    await b.stop()  # its keys go: a forgets it, and a caller gets a clean "offline"
    assert await _until(lambda: a.core._remote_count == 0 and a.core.user_count == 1)


async def test_revocation_on_any_node_cuts_sessions_on_every_node(
    nodes, cluster_bot, redis_url: str, shared_state
) -> None:
    a, b = await nodes("a"), await nodes("b")
    alice = cluster_bot(b, "alice", role="user", minted_by=a)
    bob = cluster_bot(b, "bob", role="user", minted_by=a)
    await alice.start()
    await bob.start()

    started = time.monotonic()
    result = await asyncio.to_thread(
        CliRunner().invoke, main,
        ["token", "revoke", "alice", "--state-dir", str(shared_state("a")), "--redis", redis_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert await _until(lambda: alice._client is not None and alice._client.fatal_error, 3)
    cut_after = time.monotonic() - started
    assert isinstance(alice._client.fatal_error, AuthError)
    assert alice._client.fatal_error.code == "session_revoked"
    print(f"alice cut on node b {cut_after:.3f}s after `callbot token revoke --redis` began")

    # a revocation in node a's state dir alone (no --redis) reaches b through a
    state = RelayState(shared_state("a"))
    state.revoke("bob")
    state.close()
    assert await _until(lambda: bob._client is not None and bob._client.fatal_error, 3)
    assert bob._client.fatal_error.code == "session_revoked"

    # every node adopted the new generations: a token minted now by b works on a
    assert b.state.generation("alice") == a.state.generation("alice") == 1
    again = Bot("alice", server=a.url, token=b.mint("alice"), role="user")
    await again.start()
    try:
        assert again.connected
    finally:
        await again.stop()


async def test_unreachable_redis_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    relay = Relay(port=0, state_dir=tmp_path / "s", backplane=RedisBackplane(url))
    started = time.monotonic()
    with pytest.raises(BackplaneError, match=r"cannot reach Redis at redis://127\.0\.0\.1:"):
        await relay.start()
    assert time.monotonic() - started < 10


def test_serve_with_unreachable_redis_exits_with_one_line(tmp_path: Path) -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(
        main, ["serve", "--port", "0", "--state-dir", str(tmp_path), "--redis", url]
    )
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: cannot reach Redis at redis://user:***@127.0.0.1:")
    assert "secret" not in result.output


async def test_pool_members_on_two_nodes_share_calls_from_a_third(nodes, cluster_bot) -> None:
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    members = [cluster_bot(node, "support", max_calls=1) for node in (b, c)]
    for member in members:
        _echo(member)
    carol = cluster_bot(c, "carol", role="user")
    dave = cluster_bot(a, "dave", role="user")
    await asyncio.gather(*(m.start() for m in members), carol.start(), dave.start())
    assert await _until(lambda: a.core.sessions_of("support") == c.core.sessions_of("support") == 2)

    first = await carol.call("support")  # node c owns this call
    await first.wait_connected(10)
    # node a learns that member's load from its node, so its call goes to the other one
    assert await _until(lambda: sum(a.core._load(s) for s in _members(a)) == 1)
    second = await dave.call("support")
    await second.wait_connected(10)
    assert sorted(len(m.active_calls) for m in members) == [1, 1]
    assert await _until(lambda: sum(a.core._load(s) for s in _members(a)) == 2)
    full = await dave.call("support")
    assert await full.wait_ended(5) == "rejected:busy"
    await asyncio.gather(first.hangup(), second.hangup())


def _members(relay: Relay) -> list:
    """The relay's view of the `support` pool's connections (its own and other nodes')."""
    return [relay.core._sessions[conn] for conn in relay.core._by_user.get("support", ())]


async def test_presence_across_nodes(nodes, cluster_bot) -> None:
    a, b = await nodes("a"), await nodes("b")
    alice = cluster_bot(a, "alice", role="user")
    bob = cluster_bot(b, "bob", role="user")
    await alice.start()
    await bob.start()
    await bob.set_presence("away", "lunch", visible_to=["alice"])
    assert await _until(lambda: a.core._presence.setting("bob") is not None)
    await alice.subscribe_presence(["bob"])
    assert await _until(lambda: alice.presence.get("bob", {}).get("status") == "away")
    assert alice.presence["bob"]["text"] == "lunch"
    await bob.stop()
    assert await _until(lambda: alice.presence["bob"]["status"] == "offline")


async def test_redis_restart_mid_call_loses_no_call(
    nodes, cluster_bot, redis_server, tone_file
) -> None:
    a, b = await nodes("a"), await nodes("b")
    echo = cluster_bot(b, "echo")
    _echo(echo)
    alice = cluster_bot(a, "alice", role="user")
    await echo.start()
    await alice.start()
    assert await _until(lambda: a.core.sessions_of("echo") == 1)
    call = await alice.call("echo")
    await call.wait_connected(10)
    (answered,) = echo.active_calls

    redis_server.stop(kill=True)  # kill -9, then an empty Redis on the same port
    redis_server.start()
    redis = await connect(redis_server.url)
    try:  # the nodes see their keys gone and tell the new Redis everything again
        for _ in range(100):
            if await redis.hlen("callbot:conns:node-b") and await redis.exists(
                f"callbot:call:{call.id}"
            ):
                break
            await asyncio.sleep(0.1)
        assert await redis.hlen("callbot:conns:node-b") == 1
        assert await redis.get(f"callbot:call:{call.id}") == b"node-a"
    finally:
        await redis.aclose()
    frames = call.audio_frames()  # media never stopped: it is peer to peer
    call.send_audio_file(tone_file(".wav", 440.0, seconds=1.5))
    assert abs(analysis.dominant_frequency(await collect_frames(frames, 2.0)) - 440.0) <= 5
    await call.hangup()  # and the call's signalling still crosses nodes
    assert await answered.wait_ended(5) == "remote_hangup"
    again = await alice.call("echo")
    await again.wait_connected(10)
    await again.hangup()


async def test_a_node_that_dies_is_forgotten_and_media_goes_on(
    nodes, cluster_bot, tone_file
) -> None:
    a, b = await nodes("a"), await nodes("b")
    echo = cluster_bot(b, "echo")
    _echo(echo)
    alice = cluster_bot(a, "alice", role="user")
    await echo.start()
    await alice.start()
    assert await _until(lambda: a.core.sessions_of("echo") == 1)
    call = await alice.call("echo")
    await call.wait_connected(10)

    backplane = b.backplane
    assert isinstance(backplane, RedisBackplane)
    for task in backplane._tasks:  # as with kill -9: no bye, its keys left to expire
        task.cancel()
    client, backplane._client = backplane._client, None
    await client.aclose()
    await b.stop()
    started = time.monotonic()
    assert await _until(lambda: a.core.sessions_of("echo") == 0, 15)
    print(f"node b forgotten {time.monotonic() - started:.1f}s after it died")
    assert a.core.call_count == 1  # the call waits for its party to come back (absent_grace)
    frames = call.audio_frames()
    call.send_audio_file(tone_file(".wav", 440.0, seconds=1.5))
    assert abs(analysis.dominant_frequency(await collect_frames(frames, 2.0)) - 440.0) <= 5


async def test_revoking_a_party_ends_its_call_across_nodes(
    nodes, cluster_bot, shared_state
) -> None:
    a, b = await nodes("a"), await nodes("b")
    echo = cluster_bot(b, "echo")
    _echo(echo)
    alice = cluster_bot(a, "alice", role="user")
    await echo.start()
    await alice.start()
    assert await _until(lambda: a.core.sessions_of("echo") == 1)
    call = await alice.call("echo")
    await call.wait_connected(10)
    (answered,) = echo.active_calls

    state = RelayState(shared_state("b"))  # on the callee's node; node a owns the call
    state.revoke("echo")
    state.close()
    assert await call.wait_ended(10) == "revoked"
    assert await answered.wait_ended(10) == "revoked"
    assert echo._client is not None and echo._client.fatal_error.code == "session_revoked"


async def test_blind_transfer_across_three_nodes(nodes, cluster_bot) -> None:
    """alice (node a) calls desk (node b), which transfers her to carol (node c): her
    follow-up call crosses nodes again, with a token minted by yet another node."""
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    desk = cluster_bot(b, "desk")
    carol = cluster_bot(c, "carol", minted_by=a)
    _echo(carol)
    alice = cluster_bot(a, "alice", role="user", minted_by=c)

    @desk.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.wait_connected(10)
        await call.transfer("carol")

    await asyncio.gather(desk.start(), carol.start(), alice.start())
    assert await _until(lambda: a.core.sessions_of("desk") == a.core.sessions_of("carol") == 1)
    transferred: list = []
    call = await alice.call("desk")
    call.on("transferred", transferred.append)
    assert await call.wait_ended(10) == "transferred"
    assert await _until(lambda: bool(transferred), 10)
    (follow_up,) = transferred
    await follow_up.wait_connected(10)
    (taken,) = carol.active_calls
    assert taken.peer == "alice" and taken.metadata["transferred_by"] == "desk"
    await follow_up.hangup()
    assert await taken.wait_ended(5) == "remote_hangup"


async def test_signalling_while_redis_is_down_is_sent_later_or_refused(
    nodes, redis_server, monkeypatch
) -> None:
    """Kept for Redis while it is away and sent once it is back; past MAX_BACKLOG refused
    to its sender with a typed error naming the call (scripted clients: no media)."""
    a, b = await nodes("a"), await nodes("b")
    alice = await _hello(a.url, a.mint("alice"))
    bob = await _hello(b.url, a.mint("bob"))
    assert await _until(lambda: a.core.sessions_of("bob") == 1)
    await alice.send(json.dumps({"type": "call_offer", "call_id": "k1", "to": "bob",
                                 "sdp": "v=0"}))  # fmt: skip
    assert (await _next(bob, "call_offer"))["from"] == "alice"
    await bob.send(json.dumps({"type": "call_answer", "call_id": "k1", "sdp": "v=0"}))
    await _next(alice, "call_answer")

    redis_server.stop(kill=True)
    monkeypatch.setattr(backplane, "MAX_BACKLOG", 1)
    for n in (1, 2):
        await alice.send(json.dumps({"type": "ice", "call_id": "k1", "candidate": {"n": n}}))
        await asyncio.sleep(0.6)  # the node tried Redis (and failed) with what it holds
    refusal = await _next(alice, "error")
    assert (refusal["code"], refusal["call_id"]) == ("rate_limited", "k1")
    redis_server.start()
    assert (await _next(bob, "ice", 15))["candidate"] == {"n": 1}
    await asyncio.gather(alice.close(), bob.close())


async def _hello(url: str, token: str) -> ClientConnection:
    websocket = await ws_connect(url, proxy=None)
    await websocket.send(json.dumps({"type": "hello", "token": token}))
    await _next(websocket, "welcome")
    return websocket


async def _next(websocket: ClientConnection, kind: str, timeout: float = 5.0) -> dict:
    """The next message of type `kind` (others skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await websocket.recv())
            if message["type"] == kind:
                return message


async def test_attended_transfer_across_three_nodes(nodes, cluster_bot) -> None:
    """alice (node b) calls desk (node a), which consults carol (node c) and hands alice over:
    the grant minted by desk's node lets alice's replacing call through her own node."""
    a, b, c = await nodes("a"), await nodes("b"), await nodes("c")
    desk, carol = cluster_bot(a, "desk"), cluster_bot(c, "carol")
    alice = cluster_bot(b, "alice", role="user")
    answered: dict[str, list] = {"desk": [], "carol": []}
    for bot in (desk, carol):
        bot.listen_for_calls(_keep_answered(answered[bot.user_id]))
    await asyncio.gather(desk.start(), carol.start(), alice.start())
    assert await _until(lambda: b.core.sessions_of("desk") == a.core.sessions_of("carol") == 1)

    transferred: list = []
    call = await alice.call("desk")  # node b owns it
    call.on("transferred", transferred.append)
    await call.wait_connected(10)
    assert await _until(lambda: bool(answered["desk"]))
    with_alice = answered["desk"][0]
    await with_alice.wait_connected(10)
    consultation = await with_alice.attended_transfer("carol")  # node a owns this one
    await consultation.wait_connected(10)
    await with_alice.complete_transfer()
    assert await call.wait_ended(5) == "transferred"
    assert await _until(lambda: bool(transferred), 10)
    await transferred[0].wait_connected(10)
    assert await _until(lambda: [x.state for x in carol.active_calls] == ["connected"])
    (replacing,) = carol.active_calls
    assert replacing.peer == "alice" and len(answered["carol"]) == 1  # taken over, not rung
    await transferred[0].hangup()
    assert await replacing.wait_ended(5) == "remote_hangup"


def _keep_answered(into: list) -> Callable:
    async def answer(incoming: Incoming) -> None:
        into.append(await incoming.accept())

    return answer
