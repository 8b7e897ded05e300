"""TURN: the relay's time-limited credentials, relay-only calls and clear TURN errors, checked
against a real coturn on 127.0.0.1 (Debian's `coturn`; those tests skip when it is missing).

The coturn tests share one server started by the `coturn` fixture (module scope) with the
REST-API secret `SECRET`; each test runs its own relay (free port) handing out credentials for it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioice.turn
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import connect

from callbot import Bot, CallError, Incoming
from callbot.cli import main
from callbot.ice import PROBE_TIMEOUT, IceConfig, has_relay_candidate, probe_turn
from callbot.media import analysis
from callbot.signaling import client as relay_client
from callbot.signaling.relay import Relay
from callbot.signaling.turn import (
    TurnRestAuth,
    credentials_expiry,
    rest_credentials,
    split_urls,
    stun_servers,
)

from helpers import collect_frames, eventually, missing_peer

SECRET = "callbot-test-secret"
RELAY_PORTS = (49160, 49199)  # coturn's relay port range (fixed, small)
CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ (\S+)(.*)$", re.M)


# -- coturn --------------------------------------------------------------------------------------


@dataclass
class Coturn:
    url: str
    port: int
    log_path: Path

    def log(self) -> str:
        """coturn's output so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def _stun_binding_answered(port: int) -> bool:
    """Whether a STUN server answers a Binding request on 127.0.0.1:port (UDP)."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(range(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(request, ("127.0.0.1", port))
            reply = sock.recv(2048)
        except OSError:  # timeout, or refused: not listening yet
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == request[8:20]


def coturn_command(port: int, directory: Path) -> list[str]:
    """coturn in the foreground, unprivileged, loopback only, REST-API auth with SECRET."""
    return [
        "turnserver",
        "-n",  # no configuration file: everything is on this command line
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={RELAY_PORTS[0]}",
        f"--max-port={RELAY_PORTS[1]}",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=callbot",
        "--allow-loopback-peers",  # both peers' relayed addresses are on 127.0.0.1
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--log-file=stdout",
        "--simple-log",
        f"--pidfile={directory / 'turnserver.pid'}",
        f"--userdb={directory / 'turndb'}",  # not the system-wide /var/lib/turn/turndb
    ]


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """A coturn on 127.0.0.1 (free port) for this module, stopped by its PID at the end."""
    if shutil.which("turnserver") is None:
        missing_peer("coturn is not installed (apt-get install coturn): no TURN server to test")
    directory = tmp_path_factory.mktemp("coturn")
    port = _free_port()
    log_path = directory / "turnserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            coturn_command(port, directory), stdout=log, stderr=subprocess.STDOUT
        )
    server = Coturn(f"turn:127.0.0.1:{port}", port, log_path)
    try:
        deadline = time.monotonic() + 15
        while not _stun_binding_answered(port):
            assert process.poll() is None, f"coturn exited: {server.log()}"
            assert time.monotonic() < deadline, f"coturn did not start: {server.log()}"
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def turn_relay(
    tmp_path: Path, coturn: Coturn
) -> AsyncIterator[Callable[..., Awaitable[Relay]]]:
    """Factory: a relay (free port) handing out credentials for coturn, with a given secret,
    ttl or TURN URL; stopped at the end."""
    relays: list[Relay] = []

    async def make(secret: str = SECRET, ttl: float = 3600.0, url: str | None = None) -> Relay:
        turn = TurnRestAuth((url or coturn.url,), secret, ttl)
        relay = Relay(port=0, state_dir=tmp_path / f"relay-{len(relays)}", turn=turn)
        relays.append(relay)
        return await relay.start()

    yield make
    for relay in relays:
        await relay.stop()


@pytest.fixture
async def bots() -> AsyncIterator[list[Bot]]:
    """Bots a test creates (append them); all are stopped at the end."""
    made: list[Bot] = []
    yield made
    await asyncio.gather(*(b.stop() for b in made), return_exceptions=True)


def _bot(bots: list[Bot], relay: Relay, user: str, **kwargs: Any) -> Bot:
    bot = Bot(
        user, server=relay.url, token=relay.mint(user, role=kwargs.get("role", "bot")), **kwargs
    )
    bots.append(bot)
    return bot


def _echo(bot: Bot) -> None:
    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.set_audio_source(call.remote_track("audio"))


def _get_json(url: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return json.loads(response.read())


class _Released(asyncio.DatagramProtocol):
    """Receives a TURN allocation's data; `closed` is done once the allocation is deleted."""

    def __init__(self) -> None:
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _allocate(server: dict[str, Any]) -> tuple[str, int]:
    """Make (and delete) a TURN allocation with the credentials of an ice_servers entry, as
    aioice does for a relay candidate; returns the relayed address."""
    host, port = server["urls"][0].removeprefix("turn:").split(":")
    transport, protocol = await asyncio.wait_for(
        aioice.turn.create_turn_endpoint(
            _Released,
            server_addr=(host, int(port)),
            username=server["username"],
            password=server["credential"],
        ),
        5,
    )
    address = transport.get_extra_info("sockname")
    transport.close()
    await asyncio.wait_for(protocol.closed, 5)
    return address


def _turn_config(server: dict[str, Any]) -> dict[str, Any]:
    """aioice's TURN arguments for an ice_servers entry (what `probe_turn` takes)."""
    host, port = server["urls"][0].removeprefix("turn:").split(":")
    return {"turn_server": (host, int(port)), "turn_username": server["username"],
            "turn_password": server["credential"], "turn_ssl": False,
            "turn_transport": "udp"}  # fmt: skip


def _candidates(sdp: str) -> list[tuple[str, int, str, str]]:
    """(address, port, type, rest of the line) of each candidate in a session description."""
    return [(m[1], int(m[2]), m[3], m[4]) for m in CANDIDATE.finditer(sdp)]


# -- credentials (no TURN server needed) ---------------------------------------------------------


def test_rest_credentials_are_hmac_sha1_of_the_username() -> None:
    username, credential = rest_credentials("s3cret", "alice", 1700000000)
    assert username == "1700000000:alice"
    expected = hmac.new(b"s3cret", b"1700000000:alice", hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_ice_server_minting_and_expiry_parsing() -> None:
    auth = TurnRestAuth(("turn:turn.example.org:3478", "turn:turn.example.org?transport=tcp"),
                        "s3cret", ttl=600)  # fmt: skip
    server = auth.ice_server("bob", now=1000.2)
    assert server["urls"] == list(auth.urls) and server["username"] == "1601:bob"
    assert credentials_expiry([{"urls": ["stun:x"]}, server]) == 1601.0
    assert credentials_expiry([{"urls": ["stun:x"]}, {"urls": ["turn:x"], "username": "u"}]) is None
    for bad in ({"urls": ()}, {"urls": ("stun:x",)}, {"urls": ("turn:[::1]:3478",)},
                {"secret": ""}, {"ttl": 0.5}):  # fmt: skip
        settings = {"urls": ("turn:x:3478",), "secret": "s", **bad}
        with pytest.raises(ValueError):
            TurnRestAuth(**settings)  # type: ignore[arg-type]
    assert split_urls(["turn:a:1, turn:b:2", "turn:c"]) == ["turn:a:1", "turn:b:2", "turn:c"]
    assert stun_servers(["stun:s:3478"]) == [{"urls": ["stun:s:3478"]}] and stun_servers([]) == []
    with pytest.raises(ValueError, match="turn:x"):
        stun_servers(["turn:x"])


def test_ice_config_url_follows_the_websocket_url() -> None:
    assert (relay_client.ice_config_url("ws://127.0.0.1:8765/ws")
            == "http://127.0.0.1:8765/api/v1/calls/ice-config")  # fmt: skip
    assert (relay_client.ice_config_url("wss://example.org/callbot/ws/")
            == "https://example.org/callbot/api/v1/calls/ice-config")  # fmt: skip


async def test_relay_only_without_a_turn_server_fails_at_once(relay: Relay, bots) -> None:
    alice = _bot(bots, relay, "alice", role="user", always_relay=True)
    await alice.start()
    started = time.monotonic()
    with pytest.raises(CallError) as caught:
        await alice.call("anyone")
    assert caught.value.code == "no_turn_server"
    assert time.monotonic() - started < 2


def test_cli_checks_the_turn_options(tmp_path: Path) -> None:
    unset = ("CALLBOT_TURN_URLS", "CALLBOT_TURN_SECRET", "CALLBOT_TURN_TTL", "CALLBOT_STUN_URLS")
    runner = CliRunner(env=dict.fromkeys(unset))  # none of these: every invocation must fail
    state = ["--state-dir", str(tmp_path)]
    result = runner.invoke(main, ["serve", *state, "--turn-url", "turn:127.0.0.1:3478"])
    assert result.exit_code == 2 and "--turn-secret" in result.output
    result = runner.invoke(main, ["serve", *state, "--turn-url", "http://x", "--turn-secret", "s"])
    assert result.exit_code == 2 and "not a TURN URL" in result.output
    result = runner.invoke(main, ["serve", *state, "--stun-url", "turn:x"])
    assert result.exit_code == 2 and "not a STUN URL" in result.output
    result = runner.invoke(main, ["run", "--help"])
    assert "--always-relay" in result.output and "--turn-url" in result.output


def test_always_relay_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBOT_ALWAYS_RELAY", "1")
    assert Bot("x", server="ws://127.0.0.1:1/ws", token="t").config.ice.relay_only
    assert not IceConfig().relay_only  # only the edge (Bot, CLI) reads the environment
    monkeypatch.delenv("CALLBOT_ALWAYS_RELAY")
    assert not Bot("x", server="ws://127.0.0.1:1/ws", token="t").config.ice.relay_only
    bot = Bot("x", server="ws://127.0.0.1:1/ws", token="t", always_relay=True)
    assert bot.config.ice.relay_only


# -- against coturn ------------------------------------------------------------------------------


async def test_ice_config_gives_credentials_coturn_accepts_until_they_expire(
    turn_relay, coturn: Coturn
) -> None:
    relay = await turn_relay(ttl=3)
    token = relay.mint("alice")
    before = time.time()
    body = await asyncio.to_thread(_get_json, f"{relay.http_url}/api/v1/calls/ice-config", token)
    (server,) = body["ice_servers"]
    assert body["user"] == "alice" and body["ttl"] == 3
    assert server["urls"] == [coturn.url]
    expiry, user = server["username"].split(":", 1)
    assert user == "alice" and body["expires_at"] == float(expiry)
    assert before + 3 <= float(expiry) <= time.time() + 4
    digest = hmac.new(SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert server["credential"] == base64.b64encode(digest).decode()

    # welcome.ice_servers: the same server, credentials of its own for this user
    async with connect(relay.url, proxy=None) as ws:
        await ws.send(json.dumps({"type": "hello", "v": 1, "token": relay.mint("bob")}))
        welcome = json.loads(await ws.recv())
    (welcomed,) = welcome["ice_servers"]
    assert welcomed["urls"] == [coturn.url] and welcomed["username"].endswith(":bob")

    host, port = await _allocate(server)  # coturn checks the HMAC, and allocates
    assert host == "127.0.0.1" and RELAY_PORTS[0] <= port <= RELAY_PORTS[1], coturn.log()
    tampered = {**server, "credential": base64.b64encode(b"x" * 20).decode()}
    assert (await probe_turn(_turn_config(tampered))).code == "turn_auth_failed"

    await asyncio.sleep(max(0.0, float(expiry) + 1.2 - time.time()))  # past the expiry
    refused = await probe_turn(_turn_config(server))
    assert refused.code == "turn_auth_failed", refused


async def test_relay_only_call_through_coturn_carries_audio(
    turn_relay, coturn: Coturn, bots, tone_file
) -> None:
    relay = await turn_relay()
    echo = _bot(bots, relay, "echo", always_relay=True)
    _echo(echo)
    alice = _bot(bots, relay, "alice", role="user", always_relay=True)
    await asyncio.gather(echo.start(), alice.start())

    call = await alice.call("echo")
    await call.wait_connected(20)
    pc = call.peer_connection
    assert pc is not None
    for name, sdp in (("offer", pc.localDescription.sdp), ("answer", pc.remoteDescription.sdp)):
        candidates = _candidates(sdp)
        assert candidates, f"no candidate in the {name}"
        for address, port, kind, rest in candidates:
            assert kind == "relay", f"{name} exposes a {kind} candidate: {address}:{port}"
            assert RELAY_PORTS[0] <= port <= RELAY_PORTS[1]  # allocated by our coturn
            assert "raddr 0.0.0.0" in rest  # the related (host) address is hidden too
        assert has_relay_candidate(sdp)

    frames = call.audio_frames()
    call.send_audio_file(tone_file(".wav", 440.0, seconds=3.0), loop=True)
    await collect_frames(frames, 0.5)  # the echo path fills up
    received = await collect_frames(frames, 2.0)
    assert len(received) >= 50, "too little audio came back through TURN"
    assert abs(analysis.dominant_frequency(received) - 440.0) <= 5
    await call.hangup()


async def test_wrong_secret_fails_fast_with_turn_auth_failed(
    turn_relay, coturn: Coturn, bots
) -> None:
    relay = await turn_relay(secret="not-the-coturn-secret")
    alice = _bot(bots, relay, "alice", role="user", always_relay=True)
    await alice.start()
    started = time.monotonic()
    with pytest.raises(CallError) as caught:
        await alice.call("echo")
    elapsed = time.monotonic() - started
    print(f"turn_auth_failed after {elapsed:.2f} s")
    assert caught.value.code == "turn_auth_failed", caught.value
    assert f"127.0.0.1:{coturn.port}" in str(caught.value)
    assert elapsed < 3.0


async def test_unreachable_turn_server_gives_turn_unreachable(turn_relay, bots) -> None:
    relay = await turn_relay(url=f"turn:127.0.0.1:{_free_port()}")  # nothing listens there
    alice = _bot(bots, relay, "alice", role="user", always_relay=True)
    await alice.start()
    started = time.monotonic()
    with pytest.raises(CallError) as caught:
        await alice.call("echo")
    elapsed = time.monotonic() - started
    print(f"turn_unreachable after {elapsed:.2f} s")
    assert caught.value.code == "turn_unreachable", caught.value
    # aioice gives up gathering after 5 s, then the probe waits PROBE_TIMEOUT
    assert elapsed < 5 + PROBE_TIMEOUT + 4


async def test_credentials_are_refreshed_before_they_expire(
    turn_relay, coturn: Coturn, bots
) -> None:
    relay = await turn_relay(ttl=6)
    echo = _bot(bots, relay, "echo", always_relay=True)
    _echo(echo)
    alice = _bot(bots, relay, "alice", role="user", always_relay=True)
    await asyncio.gather(echo.start(), alice.start())
    assert alice._client is not None and echo._client is not None
    first = credentials_expiry(alice._client.ice_servers)
    assert first is not None

    await eventually(
        lambda: credentials_expiry(alice._client.ice_servers),
        "refreshed ICE servers",
        until=lambda expiry: expiry != first,
        timeout=15,
    )
    refreshed_at = time.time()
    assert refreshed_at < first, "refreshed only after the credentials expired"
    assert credentials_expiry(alice._client.ice_servers) > first

    await asyncio.sleep(max(0.0, first + 1.2 - time.time()))  # the first credentials expired
    call = await alice.call("echo")  # stale credentials would fail with turn_auth_failed
    await call.wait_connected(20)
    await call.hangup()
