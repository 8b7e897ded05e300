"""The relay over real sockets: HTTP endpoints, bad input on the wire, auth, revocation, limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from callbot.identity import mint_token
from callbot.signaling.client import RelayClient
from callbot.signaling.messages import MAX_MESSAGE_BYTES
from callbot.signaling.relay import MAX_OUTBOX_BYTES, Relay
from callbot.signaling.relay_core import RelayLimits
from callbot.signaling.state import RelayState


async def _open(relay: Relay, user: str, role: str = "user") -> ClientConnection:
    ws = await connect(relay.url, proxy=None)
    await ws.send(
        json.dumps({"type": "hello", "v": 1, "token": relay.mint(user, role=role), "role": role})
    )
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome" and welcome["user"] == user
    return ws


async def _next(ws: ClientConnection, timeout: float = 2.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def _hello_refused(relay: Relay, token: str) -> tuple[dict[str, Any], int | None]:
    ws = await connect(relay.url, proxy=None)
    await ws.send(json.dumps({"type": "hello", "v": 1, "token": token}))
    reply = await _next(ws)
    await asyncio.wait_for(ws.wait_closed(), 2)
    return reply, ws.close_code


def _get(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_healthz_and_ice_config(relay: Relay) -> None:
    base = relay.http_url
    status, body = await asyncio.to_thread(_get, f"{base}/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await asyncio.to_thread(_get, f"{base}/api/v1/calls/ice-config")
    assert status == 401 and body["error"] == "auth_failed"
    status, body = await asyncio.to_thread(_get, f"{base}/api/v1/calls/ice-config", "junk")
    assert status == 401 and body["error"] == "auth_failed"
    token = relay.mint("alice")
    status, body = await asyncio.to_thread(_get, f"{base}/api/v1/calls/ice-config", token)
    assert status == 200 and body == {"user": "alice", "ice_servers": []}
    status, body = await asyncio.to_thread(_get, f"{base}/nope")
    assert status == 404


@pytest.mark.parametrize(
    "payload",
    [
        "{not json",
        json.dumps({"type": "teleport", "v": 1}),
        json.dumps({"type": "call_offer", "v": 1, "call_id": 7, "to": "bob", "sdp": "x"}),
        json.dumps({"type": "hangup", "v": 1, "call_id": "c1", "reason": ["no"]}),
        json.dumps(
            {"type": "mediastatus", "v": 1, "call_id": "c", "audio_muted": 1, "video_muted": False}
        ),
        "x" * (MAX_MESSAGE_BYTES + 10),
    ],
    ids=["malformed", "unknown-type", "int-id", "list-reason", "int-as-bool", "oversize"],
)
async def test_bad_messages_get_typed_errors_and_the_connection_stays(
    relay: Relay, payload: str
) -> None:
    alice = await _open(relay, "alice")
    bob = await _open(relay, "bob")
    await alice.send(payload)
    reply = await _next(alice)
    assert reply["type"] == "error" and reply["code"] == "invalid_message"
    assert reply["fatal"] is False
    # still up and still routing: alice reaches bob afterwards
    offer = {"type": "call_offer", "v": 1, "call_id": "c1", "to": "bob", "sdp": "v=0"}
    await alice.send(json.dumps(offer))
    received = await _next(bob)
    assert received["type"] == "call_offer" and received["from"] == "alice"
    await alice.close()
    await bob.close()


async def test_flood_is_rate_limited_without_disconnecting(tmp_path: Path) -> None:
    async with Relay(port=0, state_dir=tmp_path, limits=RelayLimits(rate=20, burst=20)) as relay:
        flooder = await _open(relay, "flooder")
        calm = await _open(relay, "calm")
        probe = json.dumps({"type": "hold", "v": 1, "call_id": "zz"})
        for _ in range(200):
            await flooder.send(probe)
        codes = []
        while True:
            try:
                codes.append((await _next(flooder, 0.5))["code"])
            except TimeoutError:
                break
        assert "rate_limited" in codes
        assert codes.count("rate_limited") <= 2  # the errors are rate limited too
        await calm.send(probe)  # another client is unaffected
        assert (await _next(calm))["code"] == "call_not_found"
        await asyncio.sleep(1.1)  # the bucket refills: the flooder is served again
        await flooder.send(probe)
        assert (await _next(flooder))["code"] == "call_not_found"


async def test_unauthenticated_garbage_is_fatal(relay: Relay) -> None:
    ws = await connect(relay.url, proxy=None)
    await ws.send("{not json")
    reply = await _next(ws)
    assert reply["code"] == "auth_failed" and reply["fatal"] is True
    await asyncio.wait_for(ws.wait_closed(), 2)
    assert ws.close_code == 4001


async def test_forged_tampered_and_expired_tokens(relay: Relay, tmp_path: Path) -> None:
    other = RelayState(tmp_path / "another-relay")
    forged = other.mint("alice", 60)
    other.close()
    reply, close_code = await _hello_refused(relay, forged)
    assert (reply["code"], reply["fatal"], close_code) == ("auth_failed", True, 4001)

    header, payload, signature = relay.mint("alice").split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    reply, close_code = await _hello_refused(relay, tampered)
    assert (reply["code"], close_code) == ("auth_failed", 4001)

    expired = mint_token(relay.state.secret, "alice", ttl=10, now=1_000_000)
    reply, close_code = await _hello_refused(relay, expired)
    assert (reply["code"], close_code) == ("auth_expired", 4002)


async def test_revocation_from_another_process_cuts_sessions_at_once(relay: Relay) -> None:
    old_token = relay.mint("alice")
    alice = await _open(relay, "alice")
    bob = await _open(relay, "bob")
    cli = RelayState(relay.state.directory)  # what `callbot token revoke alice` opens
    cli.revoke("alice")
    cli.close()
    reply = await _next(alice, timeout=2.0)
    assert reply["code"] == "session_revoked" and reply["fatal"] is True
    await asyncio.wait_for(alice.wait_closed(), 2)
    assert alice.close_code == 4003
    await bob.send(json.dumps({"type": "hold", "v": 1, "call_id": "x"}))
    assert (await _next(bob))["code"] == "call_not_found"  # bob is untouched
    reply, _ = await _hello_refused(relay, old_token)
    assert reply["code"] == "session_revoked"
    fresh = await _open(relay, "alice")  # a token minted after the revocation works
    await fresh.close()
    await bob.close()


async def test_a_relay_bug_on_one_message_is_an_internal_error_not_a_disconnect(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await _open(relay, "alice")
    real = relay.core.received

    def flaky(conn: str, data: str | bytes, now: float) -> list:
        if "explode" in str(data):
            raise RuntimeError("relay bug")
        return real(conn, data, now)

    monkeypatch.setattr(relay.core, "received", flaky)
    await alice.send(json.dumps({"type": "hold", "v": 1, "call_id": "explode"}))
    reply = await _next(alice)
    assert (reply["code"], reply["fatal"]) == ("internal_error", False)
    await alice.send(json.dumps({"type": "hold", "v": 1, "call_id": "fine"}))
    assert (await _next(alice))["code"] == "call_not_found"
    await alice.close()


async def test_metrics_in_prometheus_text(relay: Relay) -> None:
    alice = await _open(relay, "alice")
    await alice.send("{broken")
    await _next(alice)
    request = urllib.request.Request(f"{relay.http_url}/metrics")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    response = await asyncio.to_thread(opener.open, request, None, 5)
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert values["callbot_relay_connections"] == "1"
    assert values["callbot_relay_users"] == "1"
    assert values["callbot_relay_calls"] == "0"
    assert int(values["callbot_relay_messages_total"]) == 2
    assert values['callbot_relay_errors_total{code="invalid_message"}'] == "1"
    assert 0 <= float(values["callbot_relay_loop_lag_seconds"]) < 1
    assert "# TYPE callbot_relay_errors_total counter" in text
    await alice.close()


# -- hostile input: nesting, sizes, clients that do not read ------------------------------------


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def test_deep_json_is_a_typed_error_and_bad_frames_are_logged_once_per_connection(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    deep = "[" * 60000
    for _ in range(3):  # before hello: the documented fatal auth_failed, then the close
        ws = await connect(relay.url, proxy=None)
        await ws.send(deep)
        reply = await _next(ws)
        assert (reply["code"], reply["fatal"]) == ("auth_failed", True)
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert ws.close_code == 4001
    alice = await _open(relay, "alice")
    bad = [deep, '{"type":"hold","call_id":"c","v":' + "[" * 900 + "]" * 900 + "}", "{oops", b"\0"]
    for _ in range(50):
        for frame in bad:
            await alice.send(frame)
            reply = await _next(alice)
            assert (reply["code"], reply["fatal"]) == ("invalid_message", False), reply
            assert len(reply["message"]) < 200
    await alice.send(json.dumps({"type": "hold", "v": 1, "call_id": "zz"}))
    assert (await _next(alice))["code"] == "call_not_found"  # still served
    await alice.close()
    for _ in range(100):
        if relay.core.connection_count == 0:
            break
        await asyncio.sleep(0.02)
    assert _tracebacks(caplog) == []
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("callbot")]
    assert len(ours) <= 3 + 2, ours  # one line per refused connection; alice: first + counts
    assert any("invalid_message x200" in line for line in ours), ours


async def test_a_message_no_client_could_read_once_forwarded_is_refused_to_its_sender(
    relay: Relay,
) -> None:
    received: list[dict[str, Any]] = []
    bob = RelayClient(relay.url, relay.mint("bob"), on_message=received.append)
    await bob.connect()
    alice = await _open(relay, "alice")
    try:
        # 60 kB of UTF-8 under the limit, but its forwarded copy (\u00e9 escapes) is 180 kB.
        sdp = "v=0 " + "é" * 30_000
        big = {"type": "call_offer", "v": 1, "call_id": "c1", "to": "bob", "sdp": sdp}
        await alice.send(json.dumps(big, ensure_ascii=False))
        reply = await _next(alice)
        assert (reply["code"], reply.get("call_id")) == ("invalid_message", "c1"), reply
        # The largest offer whose copy fits reaches the Python client whole.
        fits = {"type": "call_offer", "v": 1, "call_id": "c2", "to": "bob", "sdp": ""}
        room = MAX_MESSAGE_BYTES - len(json.dumps({**fits, "from": "alice"}, separators=(",", ":")))
        fits["sdp"] = "x" * room
        await alice.send(json.dumps(fits))
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.02)
        assert [(m["call_id"], len(m["sdp"])) for m in received] == [("c2", room)]
    finally:
        await bob.close()
        await alice.close()


async def _drain(ws: ClientConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


async def _offer_until(sender: ClientConnection, to: str, done: Callable[[], bool]) -> int:
    """Send `to` 60 kB offers (about 200 a second) until `done()`; the number sent."""
    sdp = "v=0\r\n" + "a=x-pad:" + "y" * 60_000
    sent = 0
    async with asyncio.timeout(20):
        while not done():
            offer = {"type": "call_offer", "v": 1, "call_id": f"f{sent}", "to": to, "sdp": sdp}
            await sender.send(json.dumps(offer))
            sent += 1
            await asyncio.sleep(0.005)
    return sent


def _outbox_of(relay: Relay, user: str) -> Any:
    [outbox] = [box for conn, box in relay._outboxes.items() if relay.core.user_of(conn) == user]
    return outbox


async def test_a_client_that_stops_reading_is_dropped_at_once_and_others_go_on(
    relay: Relay,
) -> None:
    alice = await _open(relay, "alice")
    alice.transport.pause_reading()  # alice's app hangs: nothing is read from her socket again
    bob, carol = await _open(relay, "bob"), await _open(relay, "carol")
    reader = asyncio.create_task(_drain(bob))
    outbox = _outbox_of(relay, "alice")
    most = 0

    def alice_gone() -> bool:
        nonlocal most
        most = max(most, outbox.queued_bytes)
        return relay.core.sessions_of("alice") == 0

    sent = await _offer_until(bob, "alice", alice_gone)  # ~10 MB of socket buffers, then 1 MiB
    assert most <= MAX_OUTBOX_BYTES
    assert sent < 1000  # before: until keepalive (50 s), the rate limiter and the call limit
    await carol.send(json.dumps({"type": "hold", "v": 1, "call_id": "zz"}))
    assert (await _next(carol))["code"] == "call_not_found"
    await bob.send(json.dumps({"type": "call_offer", "v": 1, "call_id": "c", "to": "carol",
                               "sdp": "v=0"}))  # fmt: skip
    assert (await _next(carol))["from"] == "bob"
    reader.cancel()
    alice.transport.abort()
    await bob.close()
    await carol.close()


async def test_a_fatal_close_to_a_client_that_does_not_read_aborts_it(relay: Relay) -> None:
    alice = await _open(relay, "alice")
    alice.transport.pause_reading()
    bob = await _open(relay, "bob")
    reader = asyncio.create_task(_drain(bob))
    transport = _outbox_of(relay, "alice").websocket.transport
    # Until the relay's socket buffer for alice is full: a close frame would wait behind it.
    await _offer_until(bob, "alice", lambda: transport.get_write_buffer_size() >= MAX_MESSAGE_BYTES)
    cli = RelayState(relay.state.directory)
    cli.revoke("alice")
    cli.close()
    async with asyncio.timeout(5):  # the revocation is seen within 0.5 s; keepalive takes 40 s
        while relay.core.sessions_of("alice"):
            await asyncio.sleep(0.05)
    reader.cancel()
    alice.transport.abort()
    await bob.close()
