"""Signed offers and answers: a relay that swaps DTLS fingerprints is caught; unsigned calls are
refused when signatures are required or the peer's key is pinned (a relay in the middle that
strips signatures and terminates DTLS itself); first-use pins and replays."""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mitm import MitmRelay

from callbot import Bot, CallbotError, Incoming
from callbot.identity import IdentityError, IdentityKey, KnownPeers, signed_text
from callbot.signaling.relay import Relay
from callbot.signaling.relay_core import Send

from helpers import eventually


def test_key_files_and_signatures(tmp_path: Path) -> None:
    key = IdentityKey.generate()
    key.save(tmp_path / "id.key")
    assert stat.S_IMODE((tmp_path / "id.key").stat().st_mode) == 0o600
    again = IdentityKey.load(tmp_path / "id.key")
    assert again.public_key == key.public_key
    sdp = "v=0\r\na=fingerprint:sha-256 AA:BB\r\n"
    sig = key.sign("c1", "alice", "bob", sdp)
    peers = KnownPeers(tmp_path / "known_peers")
    peers.pin("alice", key.public_key)
    assert KnownPeers(tmp_path / "known_peers").check("alice", sig, "c1", "alice", "bob", sdp, True)
    with pytest.raises(IdentityError, match="identity_mismatch"):
        peers.check("alice", sig, "c1", "alice", "bob", sdp.replace("AA", "CC"), True)
    with pytest.raises(IdentityError, match="identity_mismatch"):
        peers.check("alice", sig, "c2", "alice", "bob", sdp, True)  # replayed on another call
    with pytest.raises(IdentityError, match="unsigned"):
        peers.check("alice", None, "c1", "alice", "bob", sdp, True)
    with pytest.raises(IdentityError, match="unknown_peer"):
        peers.check("mallory", sig, "c1", "mallory", "bob", sdp, True)
    assert b"SHA-256" not in signed_text("c", "a", "b", sdp)  # normalised: "sha-256 AA:BB"


def test_trust_on_first_use_pins_and_logs(tmp_path: Path, caplog) -> None:
    key = IdentityKey.generate()
    sdp = "a=fingerprint:sha-256 01:02\r\n"
    peers = KnownPeers(tmp_path / "kp", trust_on_first_use=True)
    assert peers.check("carol", key.sign("c", "carol", "x", sdp), "c", "carol", "x", sdp, True)
    assert "trusting carol's key on first use" in caplog.text
    assert (tmp_path / "kp").read_text().strip() == f"carol {key.public_key}"
    other = IdentityKey.generate()  # a different key later: refused
    with pytest.raises(IdentityError, match="identity_mismatch"):
        peers.check("carol", other.sign("d", "carol", "x", sdp), "d", "carol", "x", sdp, True)


def _on_sent(relay: Relay, change: Callable[[dict[str, Any]], None]) -> None:
    """Have `change` see (and may rewrite) every message the relay core sends on a client's
    message, before it leaves: a relay that tampers with what it forwards."""
    original = relay.core.received

    def received(conn: str, data: str | bytes, now: float) -> list[Any]:
        actions = original(conn, data, now)
        for action in actions:
            if isinstance(action, Send):
                change(action.message)  # type: ignore[arg-type]
        return actions

    relay.core.received = received  # type: ignore[method-assign]


def _tamper(relay: Relay, kind: str) -> None:
    """Make the relay rewrite the DTLS fingerprint in every `kind` it forwards."""

    def rewrite(message: dict[str, Any]) -> None:
        if message["type"] == kind:
            message["sdp"] = re.sub(r"(a=fingerprint:\S+ )([0-9A-F]{2})", lambda m: m.group(1) + (
                "00" if m.group(2) != "00" else "11"), message["sdp"])  # fmt: skip

    _on_sent(relay, rewrite)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    alice, bob = IdentityKey.generate(), IdentityKey.generate()
    peers = tmp_path / "known_peers"
    peers.write_text(f"# pinned\nalice {alice.public_key}\nbob {bob.public_key}\n")
    return {"alice": alice, "bob": bob, "peers": peers}


def _bots(relay: Relay, keys: dict[str, Any], require: bool = True) -> tuple[Bot, Bot, list]:
    answered: list = []
    bob = Bot("bob", server=relay.url, token=relay.mint("bob", role="bot"), identity=keys["bob"],
              known_peers=keys["peers"], require_signatures=require)  # fmt: skip

    @bob.on_incoming
    async def take(incoming: Incoming) -> None:
        answered.append(await incoming.accept())

    alice = Bot(
        "alice", server=relay.url, token=relay.mint("alice"), role="user",
        identity=keys["alice"], known_peers=keys["peers"], require_signatures=require,
    )  # fmt: skip
    return alice, bob, answered


async def test_signed_call_connects_and_is_verified(relay: Relay, keys) -> None:
    alice, bob, answered = _bots(relay, keys)
    async with alice, bob:
        call = await alice.call("bob")
        await call.wait_connected(10)
        assert call.peer_verified and answered[0].peer_verified
        await call.hangup()


@pytest.mark.parametrize("tampered", ["call_offer", "call_answer"])
async def test_tampering_relay_is_detected(relay: Relay, keys, tampered: str) -> None:
    _tamper(relay, tampered)
    alice, bob, answered = _bots(relay, keys)
    async with alice, bob:
        call = await alice.call("bob")
        with pytest.raises(CallbotError) as caught:
            await call.wait_connected(10)
        if tampered == "call_offer":  # bob refuses before answering
            assert call.end_reason == "remote_hangup"
            assert call.remote_end_reason == "identity_mismatch"
            assert answered == []
        else:  # alice catches the swapped answer
            assert caught.value.code == "identity_mismatch"  # type: ignore[attr-defined]
            assert call.end_reason == "failed"


async def test_unsigned_offer_refused_when_required(relay: Relay, keys) -> None:
    alice, bob, answered = _bots(relay, keys)
    alice.config = alice.config.__class__()  # alice without a key: unsigned offers
    async with alice, bob:
        call = await alice.call("bob")
        with pytest.raises(CallbotError):
            await call.wait_connected(10)
        assert call.remote_end_reason == "unsigned" and answered == []
    # without the requirement, an unsigned call from a peer with no pinned key is accepted
    keys["peers"].write_text(f"bob {keys['bob'].public_key}\n")  # alice is not pinned
    alice, bob, answered = _bots(relay, keys, require=False)
    alice.config = alice.config.__class__()
    async with alice, bob:
        call = await alice.call("bob")
        await call.wait_connected(10)
        await asyncio.sleep(0.1)
        assert not answered[0].peer_verified
        await call.hangup()


# -- a relay in the middle: pinned peers must sign ----------------------------------------------


def _pinned(keys: dict[str, Any], tmp_path: Path, *users: str) -> Path:
    """A known_peers file pinning only `users`."""
    path = tmp_path / f"pins-{'-'.join(users) or 'none'}"
    path.write_text("".join(f"{u} {keys[u].public_key}\n" for u in users))
    return path


def _trusting(
    server: str, relay: Relay, user: str, keys: dict[str, Any], peers: Path | None, **kw: Any
) -> Bot:
    """A bot that signs with its key and checks `peers`, signatures not required."""
    token = relay.mint(user, role=str(kw.get("role", "bot")))
    return Bot(user, server=server, token=token, identity=keys[user], known_peers=peers, **kw)


async def test_mitm_relay_really_intercepts_calls_without_pins(relay: Relay, tone_file) -> None:
    """The harness: with nobody's key pinned, the relay in the middle gets both legs
    connected and the caller's audio reaches the callee through it (the attack is real)."""
    async with MitmRelay(relay.url) as mitm:
        answered: list = []
        bob = Bot("bob", server=mitm.url, token=relay.mint("bob", role="bot"))
        bob.on_incoming(lambda incoming: _accept(incoming, answered))
        alice = Bot("alice", server=mitm.url, token=relay.mint("alice"), role="user")
        async with alice, bob:
            call = await alice.call("bob")
            await call.wait_connected(15)
            call.send_audio_file(tone_file(seconds=2.0))
            stats = await eventually(answered[0].stats, "audio through the man in the middle",
                                     until=lambda s: _frames_received(s) > 20)  # fmt: skip
            assert sorted(mitm.calls[call.id].connected) == ["callee", "caller"]
            assert stats["received"]["audio"]["frames"] > 20  # relayed by the man in the middle
            assert not call.peer_verified and not stats["peer_verified"]
            await call.hangup()


def _frames_received(stats: dict[str, Any]) -> int:
    return int(stats["received"].get("audio", {}).get("frames", 0))


async def _accept(incoming: Incoming, answered: list) -> None:
    answered.append(await incoming.accept())


@pytest.mark.parametrize("pins", ["both", "caller_only"])
async def test_mitm_relay_stripping_signatures_is_refused(
    relay: Relay, keys, tmp_path: Path, pins: str
) -> None:
    """Signatures stripped, DTLS terminated by the relay on both legs: with the peer's key
    pinned the call is refused `unsigned` (signatures not even required) and no leg connects."""
    async with MitmRelay(relay.url) as mitm:
        answered: list = []
        bob_pins = _pinned(keys, tmp_path, "alice") if pins == "both" else None
        bob = _trusting(mitm.url, relay, "bob", keys, bob_pins)
        bob.on_incoming(lambda incoming: _accept(incoming, answered))
        alice = _trusting(mitm.url, relay, "alice", keys, _pinned(keys, tmp_path, "bob"),
                          role="user")  # fmt: skip
        async with alice, bob:
            call = await alice.call("bob")
            with pytest.raises(CallbotError) as caught:
                await call.wait_connected(15)
            if pins == "both":  # bob refuses the unsigned offer before answering
                assert call.remote_end_reason == "unsigned" and answered == []
            else:  # bob answers (alice is not pinned there); alice refuses the unsigned answer
                assert caught.value.code == "unsigned"  # type: ignore[attr-defined]
            assert call.state == "ended" and not call.peer_verified
            await asyncio.sleep(1.0)  # time for a leg to connect, if one could
            assert "caller" not in mitm.calls[call.id].connected


def test_trust_on_first_use_pins_only_a_verified_key(tmp_path: Path) -> None:
    """A forged first offer claiming to be bob (attacker's key, signature not matching) is
    refused and pins nothing: the real bob is then trusted, the attacker is not."""
    bob, attacker = IdentityKey.generate(), IdentityKey.generate()
    sdp = "a=fingerprint:sha-256 01:02\r\n"
    peers = KnownPeers(tmp_path / "kp", trust_on_first_use=True)
    forged = attacker.sign("other-call", "bob", "me", sdp)  # a signature of something else
    with pytest.raises(IdentityError, match="identity_mismatch"):
        peers.check("bob", forged, "c1", "bob", "me", sdp, False)
    assert "bob" not in peers.keys and not (tmp_path / "kp").exists()
    assert peers.check("bob", bob.sign("c2", "bob", "me", sdp), "c2", "bob", "me", sdp, False)
    assert (tmp_path / "kp").read_text() == f"bob {bob.public_key}\n"
    with pytest.raises(IdentityError, match="identity_mismatch"):
        peers.check("bob", attacker.sign("c3", "bob", "me", sdp), "c3", "bob", "me", sdp, False)


def test_pinned_peer_must_sign_and_hostile_ids_are_not_pinned(tmp_path: Path) -> None:
    key = IdentityKey.generate()
    sdp = "a=fingerprint:sha-256 01:02\r\n"
    peers = KnownPeers(tmp_path / "kp", trust_on_first_use=True)
    peers.pin("bob", key.public_key)
    with pytest.raises(IdentityError, match="unsigned"):
        peers.check("bob", None, "c1", "bob", "me", sdp, require=False)
    assert not peers.check("carol", None, "c1", "carol", "me", sdp, require=False)
    hostile = "eve\nbob"  # a relay's forged id must not add a line for bob to the file
    signed = key.sign("c2", hostile, "me", sdp)
    assert not peers.check(hostile, signed, "c2", hostile, "me", sdp, require=False)
    assert (tmp_path / "kp").read_text() == f"bob {key.public_key}\n"


async def test_replayed_offer_is_refused(relay: Relay, keys) -> None:
    """A relay that replays a signed offer (same call id, SDP and signature) to the callee
    after the call: the callee refuses it (`replayed`) instead of answering it as verified."""
    offers: list[dict[str, Any]] = []
    _on_sent(relay, lambda m: offers.append(dict(m)) if m["type"] == "call_offer" else None)
    alice, bob, answered = _bots(relay, keys)
    errors: list[CallbotError] = []
    bob.on("call", lambda call: call.on("error", errors.append))
    async with alice, bob:
        call = await alice.call("bob")
        await call.wait_connected(10)
        assert answered[0].peer_verified
        await call.hangup()
        await answered[0].wait_ended(5)
        (conn,) = relay.core._by_user["bob"]
        relay._apply([Send(conn, offers[0])])  # the relay sends the recorded offer again
        await eventually(lambda: errors, "the replay error")
        assert [getattr(e, "code", None) for e in errors] == ["replayed"]
        assert len(answered) == 1


def test_replay_memory_is_per_description(tmp_path: Path) -> None:
    """The same signed description twice is refused, however its signature is re-encoded; an
    offer and its answer (other fingerprints) by the same user are not a replay."""
    key = IdentityKey.generate()
    peers = KnownPeers(tmp_path / "kp")
    peers.pin("me", key.public_key)
    offer, answer = "a=fingerprint:sha-256 01:02\r\n", "a=fingerprint:sha-256 03:04\r\n"
    sig = key.sign("c1", "me", "me", offer)
    assert peers.check("me", sig, "c1", "me", "me", offer, True)
    assert peers.check("me", key.sign("c1", "me", "me", answer), "c1", "me", "me", answer, True)
    for again in (sig, {**sig, "sig": sig["sig"] + "!"}):
        with pytest.raises(IdentityError, match="replayed"):
            peers.check("me", again, "c1", "me", "me", offer, True)
