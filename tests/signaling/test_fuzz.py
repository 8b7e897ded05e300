"""Fuzzing the relay with hypothesis: the parser, the state machine, and the live relay over
real sockets. Whatever arrives, the relay never crashes, answers only with typed errors, and
leaks no call or presence state once everyone has gone."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from callbot.signaling.messages import CLIENT_MESSAGES, ERROR_CODES, ProtocolError, decode, validate
from callbot.signaling.relay import Relay
from callbot.signaling.relay_core import Close, Identity, RelayCore, RelayLimits, Send

USERS = ["alice", "bob", "carol"]
CALL_IDS = ["c1", "c2", "c3"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=10,
)  # fmt: skip
FIELD_VALUES = {
    "call_id": st.sampled_from(CALL_IDS) | st.text(max_size=5),
    "to": st.sampled_from(USERS) | st.text(max_size=5),
    "target": st.sampled_from(USERS),
    "token": st.sampled_from(["good:alice", "good:bob", "good:carol", "junk"]),
    "role": st.sampled_from(["bot", "user", "admin"]),
    "reason": st.sampled_from(["busy", "decline", "hangup", "x"]),
    "status": st.sampled_from(["available", "away", "dnd", "gone"]),
    "users": st.lists(st.sampled_from(USERS), max_size=3),
    "calls": st.lists(st.fixed_dictionaries({"call_id": st.sampled_from(CALL_IDS),
                                             "peer": st.sampled_from(USERS)}), max_size=2),
    "sdp": st.just("v=0\r\n"),
    "audio_muted": st.booleans(),
    "video_muted": st.booleans(),
}  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed protocol messages, some with wrong types, some of unknown types."""
    kind = draw(st.sampled_from(sorted(CLIENT_MESSAGES)) | st.text(max_size=6))
    fields = CLIENT_MESSAGES.get(kind, {})
    message: dict[str, Any] = {"type": kind}
    for name in fields:
        if draw(st.integers(0, 9)) == 0:
            continue  # sometimes missing
        strategy = FIELD_VALUES.get(name, JSON) if draw(st.integers(0, 5)) else JSON
        message[name] = draw(strategy)
    if draw(st.booleans()):
        message[draw(st.text(max_size=5))] = draw(JSON)
    return message


frames = st.one_of(
    messages().map(json.dumps),
    st.text(max_size=60),
    st.binary(max_size=20),
    JSON.map(json.dumps),
    st.integers(1, 20_000).map(lambda depth: "[" * depth + "]" * min(depth, 2_000)),  # nesting
)


@given(frames)
@settings(max_examples=2000, deadline=None)
def test_parser_raises_only_protocol_errors(frame: str | bytes) -> None:
    try:
        message = validate(decode(frame))
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
    else:
        assert message["type"] in CLIENT_MESSAGES


def _authenticate(token: str, now: float) -> Identity:
    kind, _, user = token.partition(":")
    if kind != "good":
        raise ProtocolError("auth_failed", "bad token")
    return Identity(user, now + 10_000, 0)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.integers(0, 3)),
        st.tuples(st.just("close"), st.integers(0, 3)),
        st.tuples(st.just("send"), st.integers(0, 3), frames),
        st.tuples(st.just("tick"), st.floats(0, 200)),
    ),
    max_size=60,
)


@given(operations)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_state_machine_survives_anything_and_leaks_nothing(ops: list[tuple]) -> None:
    core = RelayCore(_authenticate, limits=RelayLimits(ring_timeout=30, absent_grace=60))
    now, open_conns, closing = 0.0, set(), set()
    for op in ops:
        if op[0] == "open" and f"c{op[1]}" not in open_conns:
            actions = core.opened(f"c{op[1]}", now)
            open_conns.add(f"c{op[1]}")
        elif op[0] == "close" and f"c{op[1]}" in open_conns:
            actions = core.closed(f"c{op[1]}", now)
            open_conns.discard(f"c{op[1]}")
        elif op[0] == "send" and f"c{op[1]}" in open_conns:
            actions = core.received(f"c{op[1]}", op[2], now)
        elif op[0] == "tick":
            now += op[1]
            actions = core.tick(now)
        else:
            continue
        for action in actions:
            if isinstance(action, Close):
                closing.add(action.conn)
            elif action.message["type"] == "error":
                assert action.message["code"] in ERROR_CODES
            assert isinstance(action, Send | Close)
    for conn in list(open_conns):
        core.closed(conn, now)
    core.tick(now + 10_000)
    assert core.connection_count == 0 and core.call_count == 0 and not core._calls
    assert not core._presence._watchers and not core._presence._watching


# -- the live relay over sockets ----------------------------------------------------------------


class _RelayThread:
    """A relay on its own event loop in a thread, so synchronous hypothesis tests can use it."""

    def __init__(self, state_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.relay = Relay(port=0, state_dir=state_dir)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self.relay.start())

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def core(self, operation: Any) -> Any:
        async def call() -> Any:
            return operation(self.relay.core)

        return self.run(call())

    def stop(self) -> None:
        self.run(self.relay.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_RelayThread]:
    relay = _RelayThread(tmp_path_factory.mktemp("fuzz-relay"))
    yield relay
    relay.stop()


SENT = {"frames": 0}


async def _exchange(relay: Relay, batches: list[list[str | bytes]]) -> None:
    clients = []
    for user in USERS:
        ws = await connect(relay.url, proxy=None, max_size=2**21)
        await ws.send(json.dumps({"type": "hello", "token": relay.mint(user)}))
        assert json.loads(await ws.recv())["type"] == "welcome"
        clients.append(ws)
    for ws, batch in zip(clients, batches, strict=False):
        for frame in batch:
            try:
                await ws.send(frame)
                SENT["frames"] += 1
            except ConnectionClosed:
                break
    await asyncio.gather(*(_drain(ws) for ws in clients))  # the quiet waits overlap


async def _drain(ws: Any) -> None:
    """Read a client's answers until it is quiet (or closed): every one must be typed."""
    fatal_seen = False
    while True:
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 0.15))
        except TimeoutError:
            if ws.close_code is None:
                break  # quiet and open: all answers are in
            continue  # closed as the wait ended: read what came before the close
        except ConnectionClosed:
            break
        assert isinstance(reply.get("type"), str)
        if reply["type"] == "error":
            assert reply["code"] in ERROR_CODES, reply
            fatal_seen = fatal_seen or reply["fatal"]
    if ws.close_code is not None and ws.close_code != 1000:
        assert fatal_seen or ws.close_code == 1006, ws.close_code  # fatal, or not reading
    await ws.close()


@given(st.lists(st.lists(frames, min_size=50, max_size=60), min_size=3, max_size=3))
@settings(
    max_examples=40,  # >= 6,000 frames, so >= 5,000 even if some connections close early
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
def _generated_traffic(live_relay: _RelayThread, batches) -> None:
    """Each example: three signed-in clients send 30-40 frames each; every answer is typed."""
    live_relay.run(_exchange(live_relay.relay, batches))


@pytest.mark.timeout(600)  # ~40 s alone, more on a loaded machine: slow, not stuck
def test_live_relay_took_five_thousand_messages_and_kept_no_state(live_relay: _RelayThread) -> None:
    """One test sends the traffic and checks what it left: it needs no test to run before it."""
    SENT["frames"] = 0
    _generated_traffic(live_relay)
    assert SENT["frames"] >= 5_000, SENT
    deadline = time.monotonic() + 10
    while live_relay.core(lambda core: core.connection_count) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert live_relay.core(lambda core: core.connection_count) == 0
    live_relay.core(lambda core: core.tick(time.time() + 10_000))
    assert live_relay.core(lambda core: (core.call_count, len(core._calls))) == (0, 0)
    assert live_relay.core(lambda core: core._presence._watchers) == {}
    healthy = live_relay.run(_exchange(live_relay.relay, [[], [], []]))
    assert healthy is None  # and it still serves clients
