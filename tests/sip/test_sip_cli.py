"""The SIP side of the CLI as a user runs it, against independent peers: `callbot call sip:...`
(no relay), `callbot run --sip` with the embedded relay or an external one, registering with
Kamailio (`--sip-registrar`, `--sip-password-file`)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import BaresipPeer
from kamailio_server import Kamailio

from callbot.media import analysis
from callbot.signaling.relay import Relay
from callbot.sip import stack

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("baresip") is None, reason="pip install 'callbot[sip]'"
)

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
Peer = Callable[..., Awaitable[BaresipPeer]]


def assert_tone(recording: Path, frequency: float) -> None:
    assert abs(analysis.dominant_frequency(recording) - frequency) < 15, recording
    assert analysis.tone_level_db(recording, frequency) > -30, recording


async def callbot(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run `callbot ARGS` to its end: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Running:
    """A background `callbot run`, its output in a file; ended by its PID."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process, self.log = process, log

    async def wait_for(self, pattern: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log.read_text()):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in:\n{self.log.read_text()}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def run_callbot(
    tmp_path: Path, cli_env: dict[str, str]
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Running] = []

    async def start(*args: str) -> Running:
        log = tmp_path / f"run-{len(started)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "callbot", "run", *args, cwd=ROOT, env=cli_env,
                stdout=out, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        started.append(Running(process, log))
        return started[-1]

    yield start
    for running in started:
        if running.process.returncode is None:
            running.process.terminate()  # this PID only: we started it
            try:
                await asyncio.wait_for(running.process.wait(), 10)
            except TimeoutError:
                running.process.kill()
                await running.process.wait()


def free_sip_address(user: str) -> str:
    return f"sip:{user}@{HOST}:{stack.free_port(HOST)}"


async def test_callbot_call_sip_needs_no_relay_and_reports_like_any_call(
    baresip_peer: Peer, pcm_tone: Any, tone_file: Any, cli_env: dict[str, str]
) -> None:
    peer = await baresip_peer(user="desk", play=pcm_tone(1000.0, 10))
    code, out, err = await callbot(
        cli_env, "call", peer.uri, "--play", str(tone_file(frequency=600, seconds=2)),
        "--expect-tone", "1000", "--json", "--server", "ws://127.0.0.1:9/ws",  # never used
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["connected"] and report["end_reason"] == "hangup", report
    assert [e["ok"] for e in report["expectations"]] == [True]
    assert report["received"]["audio"]["rate"] in (8000, 48000)
    await peer.wait_closed()  # our BYE
    [heard] = peer.recordings()
    assert_tone(heard, 600.0)


async def test_callbot_run_sip_with_a_bot_file_and_the_embedded_relay(
    run_callbot: Callable[..., Awaitable[Running]], baresip_peer: Peer, tone_file: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    prompt = tone_file(frequency=1000, seconds=2)
    bot_file = tmp_path / "mybot.py"
    bot_file.write_text(
        "from callbot import Bot\n"
        "bot = Bot('ivr')\n\n"
        "@bot.on_incoming\n"
        "async def answer(incoming):\n"
        "    call = await incoming.accept()\n"
        f"    call.send_audio_file({str(prompt)!r}, loop=True)\n"
    )
    address = free_sip_address("ivr")
    bot = await run_callbot(str(bot_file), "--port", str(stack.free_port(HOST)), "--sip", address)
    await bot.wait_for(f"bot ivr takes SIP calls at {re.escape(address)}")
    peer = await baresip_peer(user="alice")
    await peer.dial(address)
    await peer.wait_established()
    await asyncio.sleep(1.5)
    await peer.hangup()
    await bot.wait_for("ended: remote_hangup")
    [heard] = peer.recordings()
    assert_tone(heard, 1000.0)


async def test_callbot_run_plugin_bot_registers_with_kamailio_via_an_external_relay(
    run_callbot: Callable[..., Awaitable[Running]], baresip_peer: Peer, tone_file: Any,
    kamailio: Kamailio, sip_users: dict[str, str], relay: Relay, tmp_path: Path,
) -> None:  # fmt: skip
    password = tmp_path / "sip-password"
    password.write_text(sip_users["bot"] + "\n")
    prompt = tone_file(frequency=900, seconds=2)
    bot = await run_callbot(
        "--as", "bot", "--plugin", "autoaccept", "--plugin", f"prompt:file={prompt},loop=true",
        "--server", relay.url, "--token", relay.mint("bot", role="bot"),
        "--sip", free_sip_address("bot"), "--sip-registrar", kamailio.uri,
        "--sip-password-file", str(password),
    )  # fmt: skip
    await bot.wait_for("bot bot takes SIP calls")
    peer = await baresip_peer(user="caller")
    await peer.dial(f"sip:bot@{kamailio.address}")
    await peer.wait_established()
    await asyncio.sleep(1.5)
    await peer.hangup()
    await peer.wait_closed()
    [heard] = peer.recordings()
    assert_tone(heard, 900.0)


async def test_a_wrong_sip_password_fails_the_run_with_one_clear_line(
    kamailio: Kamailio, cli_env: dict[str, str], tmp_path: Path
) -> None:
    password = tmp_path / "sip-password"
    password.write_text("wrong\n")
    began = time.monotonic()
    code, out, err = await callbot(
        cli_env, "run", "--as", "bot", "--plugin", "echo", "--port", str(stack.free_port(HOST)),
        "--sip", free_sip_address("bot"), "--sip-registrar", kamailio.uri,
        "--sip-password-file", str(password), timeout=30,
    )  # fmt: skip
    assert code == 1, out + err
    assert "Error: the registrar refused our credentials (403" in err or "(401" in err, err
    assert "Traceback" not in out + err
    assert time.monotonic() - began < 20  # it gave up at once: no retrying in a loop
