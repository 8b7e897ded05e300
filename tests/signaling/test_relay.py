"""The relay over real sockets: HTTP endpoints, bad input on the wire, auth, revocation, limits."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from callbot.identity import mint_token
from callbot.signaling.protocol import MAX_MESSAGE_BYTES, RelayLimits
from callbot.signaling.relay import Relay
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


async def test_outbox_of_a_client_that_does_not_read_stays_bounded() -> None:
    from callbot.signaling.protocol import Close, Send
    from callbot.signaling.relay import MAX_OUTBOX, _Outbox

    class Stuck:
        id = "stuck"

        async def send(self, data: str) -> None:
            await asyncio.Event().wait()  # never completes: the client does not read

        async def close(self, code: int, reason: str) -> None:
            self.closed = (code, reason)

    outbox = _Outbox(Stuck())  # type: ignore[arg-type]
    for index in range(MAX_OUTBOX * 3):
        outbox.put(Send("c", {"type": "hold", "n": index}))
    assert outbox.queue.qsize() <= MAX_OUTBOX
    assert outbox.closing
    queued = [outbox.queue.get_nowait() for _ in range(outbox.queue.qsize())]
    assert isinstance(queued[-1], Close) and queued[-1].code == 1008
    outbox.task.cancel()


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
