"""The Janus session under a room: kept alive past Janus's session timeout, and a room that
ends by itself when Janus goes away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from janus_server import JANUS_ADDRESS, JanusServer, Unavailable

from callbot import Bot, JanusError
from callbot.group import janus as janus_api

from helpers import missing_peer

SESSION_TIMEOUT = 3  # seconds of silence after which this Janus drops a session


@pytest.fixture
def short_lived_janus(tmp_path: Path, janus: JanusServer):
    """A Janus of our own (we stop it), quick to drop silent sessions. Needs `janus` first:
    it sets up the network, or skips."""
    server = JanusServer(tmp_path / "janus", session_timeout=SESSION_TIMEOUT)
    server.workdir.mkdir()
    try:
        server.start()
    except Unavailable as exc:
        missing_peer(str(exc))
    yield server
    server.stop()


async def test_keepalive_then_janus_gone(short_lived_janus: JanusServer, monkeypatch) -> None:
    monkeypatch.setattr(janus_api, "KEEPALIVE_INTERVAL", 1.0)
    bot = Bot("alice", janus_url=short_lived_janus.url, ice_addresses=[JANUS_ADDRESS])
    room = await bot.start_group_call(audio_only=True)
    errors: list[Exception] = []
    room.on("error", errors.append)

    assert await room.wait_ended(3 * SESSION_TIMEOUT) is None  # still in: keepalives work
    short_lived_janus.stop()
    assert await room.wait_ended(10) == "janus_lost"
    assert len(errors) == 1 and isinstance(errors[0], JanusError)
    assert bot.active_rooms == []
    await asyncio.wait_for(bot.stop(), 10)
