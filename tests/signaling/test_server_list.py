"""Clients given several relays (the nodes of a cluster): they use the next one when one is
down, from Python (`Bot(server=[...])`) and from the command line (`--server` repeated)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from callbot import Bot, Incoming
from callbot.settings import Settings
from callbot.signaling.relay import Relay


def _dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"


async def test_a_bot_moves_on_to_the_next_relay_of_its_list(relay: Relay) -> None:
    dead = _dead_url()
    bot = Bot("alice", server=[dead, relay.url], token=relay.mint("alice"), role="user")
    await bot.start()
    try:
        assert bot._client is not None and bot._client.url == relay.url
        assert relay.core.sessions_of("alice") == 1
    finally:
        await bot.stop()


async def test_callbot_call_takes_server_twice(relay: Relay, tone_file, cli_env) -> None:
    echo = Bot("echo", server=relay.url, token=relay.mint("echo", role="bot"))

    @echo.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.set_audio_source(call.remote_track("audio"))

    await echo.start()
    args = ["call", "echo", "--server", _dead_url(), "--server", relay.url,
            "--token", relay.mint("caller"), "--play", str(tone_file(".wav", 440.0, 1.0)),
            "--expect-tone", "440", "--json", "--ice-address", "127.0.0.1"]  # fmt: skip
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "callbot", *args, env=cli_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    finally:
        await echo.stop()
    assert process.returncode == 0, output
    report = json.loads(output.strip().splitlines()[-1])
    assert report["ok"] and report["connected"]


def test_the_server_setting_holds_one_url_or_several() -> None:
    one = Settings.from_env({"CALLBOT_SERVER": " ws://a/ws "})
    several = Settings.from_env({"CALLBOT_SERVER": "ws://a/ws  ws://b/ws"})
    assert (one.server, several.server) == ("ws://a/ws", ("ws://a/ws", "ws://b/ws"))
    bot = Bot("alice", server=["ws://a/ws", "ws://b/ws"], token="t", settings=Settings())
    assert bot.server == ("ws://a/ws", "ws://b/ws")
