"""Authorization between real peers on a real relay (DESIGN §10, docs/security.md): forged
transfer metadata, user tokens in a bot pool, revocation cutting media."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from callbot import Bot, Call, Incoming
from callbot.identity import AuthError
from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.signaling.state import RelayState

from helpers import collect_frames, eventually


async def test_forged_transfer_metadata_does_not_take_over_a_call(make_bot) -> None:
    """mallory knows the id of desk's call with bob and claims desk transferred her there."""
    desk, bob = make_bot("desk"), make_bot("bob")
    mallory = make_bot("mallory", role="user")
    offers: list[Incoming] = []

    @bob.on_incoming
    async def answer_desk_only(incoming: Incoming) -> None:
        offers.append(incoming)
        if incoming.from_ == "desk":
            await incoming.accept()
        else:
            await incoming.decline()

    await asyncio.gather(desk.start(), bob.start(), mallory.start())
    consultation = await desk.call("bob")
    await consultation.wait_connected(10)
    await eventually(lambda: len(bob.active_calls) == 1)
    bobs_side = bob.active_calls[0]
    forged = {"replaces": consultation.id, "transferred_by": "desk"}
    intrusion = await mallory.call("bob", metadata=forged)
    assert await intrusion.wait_ended(10) == "rejected:decline"  # bob's handler decided
    assert [o.from_ for o in offers] == ["desk", "mallory"]
    assert consultation.state == "connected" and bobs_side.state == "connected"
    await consultation.hangup()


async def test_a_user_token_cannot_join_a_bot_pool(relay: Relay, make_bot) -> None:
    echo = make_bot("echo")  # a real pool member, with a bot token
    echo.use("autoaccept")
    alice = make_bot("alice", role="user")
    await asyncio.gather(echo.start(), alice.start())
    intruder = Bot("echo", server=relay.url, token=relay.mint("echo"))  # a user token
    with pytest.raises(AuthError) as refused:
        await intruder.start()
    assert refused.value.code == "forbidden" and "--role bot" in str(refused.value)
    call = await alice.call("echo")
    await call.wait_connected(10)
    assert echo.active_calls and echo.active_calls[0].id == call.id
    await call.hangup()


async def test_revoking_a_user_ends_their_calls_and_their_media(
    relay: Relay, make_bot, tone_file
) -> None:
    tone = tone_file(".wav", 700.0, seconds=1.0)
    echo, alice = make_bot("echo"), make_bot("alice", role="user")
    echo_calls: list[Call] = []

    @echo.on_incoming
    async def answer(incoming: Incoming) -> None:
        echo_calls.append(await incoming.accept())

    await asyncio.gather(echo.start(), alice.start())
    call = await alice.call("echo")
    await call.wait_connected(10)
    await eventually(lambda: bool(echo_calls))
    at_echo = echo_calls[0]
    frames = at_echo.audio_frames()
    call.send_audio_file(tone, loop=True)
    await collect_frames(frames, 0.5)
    assert analysis.has_tone(await collect_frames(frames, 1.0), 700.0, min_db=-25)

    revoked_at = time.monotonic()
    relay.state.revoke("alice")  # what `callbot token revoke alice` does
    assert await at_echo.wait_ended(10) == "revoked"
    assert await call.wait_ended(10) == "revoked"
    print(f"revocation to the bot's hang-up: {time.monotonic() - revoked_at:.2f} s")
    assert at_echo.remote_end_reason == "revoked"
    for side in (at_echo, call):
        pc = side.peer_connection
        assert pc is not None and pc.connectionState == "closed"  # no media either way
    assert echo.active_calls == [] and alice.active_calls == []


async def test_a_client_revoked_while_the_relay_was_away_ends_its_own_calls(
    tmp_path: Path,
) -> None:
    """No relay can hang up for it here: the revoked client learns it at its next hello."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    relay = await Relay(port=port, state_dir=state).start()
    echo = Bot("echo", server=relay.url, token=relay.mint("echo", role="bot"))
    echo.use("autoaccept")
    alice = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user")
    try:
        await asyncio.gather(echo.start(), alice.start())
        call = await alice.call("echo")
        await call.wait_connected(10)
        await relay.stop()
        RelayState(state).revoke("alice")  # `callbot token revoke alice` during the outage
        relay = await Relay(port=port, state_dir=state).start()
        assert await call.wait_ended(20) == "revoked"
        pc = call.peer_connection
        assert pc is not None and pc.connectionState == "closed"
        assert alice.active_calls == []
    finally:
        await asyncio.gather(alice.stop(), echo.stop(), return_exceptions=True)
        await relay.stop()
