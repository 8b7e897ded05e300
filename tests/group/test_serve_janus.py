"""`callbot serve --janus URL` (or CALLBOT_JANUS_URL) tells every bot where Janus is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from callbot import Bot
from callbot.signaling.state import RelayState

JANUS_URL = "ws://127.0.0.1:8188"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "callbot", "serve", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.delenv("CALLBOT_JANUS_URL", raising=False)
    return {**os.environ, "CALLBOT_STATE_DIR": str(tmp_path / "state")}


async def test_bots_learn_janus_from_the_relay(env: dict[str, str], tmp_path: Path) -> None:
    port = _free_port()
    server = _serve(env, "--port", str(port), "--janus", JANUS_URL)
    try:
        deadline = time.monotonic() + 20
        with socket.socket() as probe:
            while probe.connect_ex(("127.0.0.1", port)) != 0:
                assert server.poll() is None and time.monotonic() < deadline, "relay not up"
                time.sleep(0.05)
        token = RelayState(tmp_path / "state").mint("alice", 60, "bot")
        bot = Bot("alice", server=f"ws://127.0.0.1:{port}/ws", token=token)
        await bot.start()
        try:
            assert bot.janus_url == JANUS_URL
        finally:
            await bot.stop()
    finally:
        server.terminate()  # the relay we started, by its own handle
        output, _ = server.communicate(timeout=10)
    assert f"group calls on Janus at {JANUS_URL}" in output


def test_janus_url_from_the_environment_is_checked(env: dict[str, str]) -> None:
    server = _serve({**env, "CALLBOT_JANUS_URL": "http://127.0.0.1:8088/janus"})
    output, _ = server.communicate(timeout=30)
    assert server.returncode == 2 and "--janus" in output and "ws://" in output
