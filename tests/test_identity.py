"""Signed offers and answers: a relay that swaps DTLS fingerprints is caught; unsigned calls are
refused when signatures are required."""

from __future__ import annotations

import asyncio
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from callbot import Bot, CallbotError, Incoming
from callbot.identity import IdentityError, IdentityKey, KnownPeers, signed_text
from callbot.signaling.relay import Relay


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


def _tamper(relay: Relay, kind: str) -> None:
    """Make the relay rewrite the DTLS fingerprint in every `kind` it forwards."""
    original = relay.core._forwarded

    def forwarded(message: dict[str, Any], sender: str) -> dict[str, Any]:
        out = original(message, sender)
        if out["type"] == kind:
            out["sdp"] = re.sub(r"(a=fingerprint:\S+ )([0-9A-F]{2})", lambda m: m.group(1) + (
                "00" if m.group(2) != "00" else "11"), out["sdp"])  # fmt: skip
        return out

    relay.core._forwarded = forwarded  # type: ignore[method-assign]


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
    # without the requirement, the same unsigned call is accepted (unverified)
    alice, bob, answered = _bots(relay, keys, require=False)
    alice.config = alice.config.__class__()
    async with alice, bob:
        call = await alice.call("bob")
        await call.wait_connected(10)
        await asyncio.sleep(0.1)
        assert not answered[0].peer_verified
        await call.hangup()
