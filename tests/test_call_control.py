"""Call control through a real relay between real peers: hold, mute/deafen, transfer, source
switching, presence, stats."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mitm import MitmRelay

from callbot import Bot, Call, Incoming
from callbot.media import analysis

from helpers import collect_frames, eventually


def _answer_with(bot: Bot, tone: Path | None = None, calls: list[Call] | None = None) -> None:
    """The bot accepts every call, plays `tone` looped (if given) and keeps the call."""

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept(video=incoming.video)
        if calls is not None:
            calls.append(call)
        if tone is not None:
            call.send_audio_file(tone, loop=True)


async def _connected_pair(make_bot, tone: Path | None) -> tuple[Call, Call]:
    bob_calls: list[Call] = []
    bob = make_bot("bob")
    _answer_with(bob, tone, bob_calls)
    alice = make_bot("alice", role="user")
    await asyncio.gather(bob.start(), alice.start())
    call = await alice.call("bob")
    await call.wait_connected(10)
    await eventually(lambda: bool(bob_calls))
    return call, bob_calls[0]


async def test_hold_silences_both_ways_and_resume_restores(make_bot, tone_file) -> None:
    low, high = tone_file(".wav", 440.0, seconds=1.0), tone_file(".wav", 880.0, seconds=1.0)
    alice_call, bob_call = await _connected_pair(make_bot, high)
    alice_call.send_audio_file(low, loop=True)
    at_alice, at_bob = alice_call.audio_frames(), bob_call.audio_frames()
    events: list[tuple[str, object]] = []
    alice_call.on("held", lambda by: events.append(("alice held", by)))
    bob_call.on("held", lambda by: events.append(("bob held", by)))
    bob_call.on("resumed", lambda: events.append(("bob resumed", None)))
    await collect_frames(at_alice, 0.5)

    await alice_call.hold()
    await eventually(lambda: bob_call.state == "held")
    assert alice_call.state == "held" and alice_call.prev_state == "connected"
    assert alice_call.held_by == {"local"} and bob_call.held_by == {"remote"}
    await asyncio.gather(collect_frames(at_alice, 0.3), collect_frames(at_bob, 0.3))
    heard_by_alice, heard_by_bob = await asyncio.gather(
        collect_frames(at_alice, 1.0), collect_frames(at_bob, 1.0)
    )
    assert analysis.level_dbfs(heard_by_alice) < -50 and analysis.level_dbfs(heard_by_bob) < -50
    assert ("alice held", "local") in events and ("bob held", "remote") in events

    await alice_call.resume()
    await eventually(lambda: bob_call.state == "connected")
    await asyncio.gather(collect_frames(at_alice, 0.3), collect_frames(at_bob, 0.3))
    heard_by_alice, heard_by_bob = await asyncio.gather(
        collect_frames(at_alice, 1.0), collect_frames(at_bob, 1.0)
    )
    assert analysis.has_tone(heard_by_alice, 880.0, min_db=-25)
    assert analysis.has_tone(heard_by_bob, 440.0, min_db=-25)
    assert ("bob resumed", None) in events

    await alice_call.hold()  # a held call can still be hung up
    await eventually(lambda: bob_call.state == "held")
    await bob_call.hangup()
    assert await alice_call.wait_ended(5) == "remote_hangup"


async def test_mute_and_deafen_tell_the_peer(make_bot, tone_file, tmp_path: Path) -> None:
    tone = tone_file(".wav", 660.0, seconds=1.0)
    alice_call, bob_call = await _connected_pair(make_bot, tone)
    alice_call.send_audio_file(tone, loop=True)
    statuses: list[tuple[bool, bool]] = []
    alice_call.on("mediastatus", lambda audio, video: statuses.append((audio, video)))
    at_alice = alice_call.audio_frames()

    await bob_call.mute("audio")
    await collect_frames(at_alice, 0.4)
    assert analysis.level_dbfs(await collect_frames(at_alice, 0.8)) < -50
    await bob_call.unmute("audio")
    await collect_frames(at_alice, 0.4)
    assert analysis.has_tone(await collect_frames(at_alice, 0.8), 660.0, min_db=-25)

    recording = bob_call.record_incoming(audio_path=tmp_path / "bob-hears.wav")
    await asyncio.sleep(0.8)
    await bob_call.deafen()
    await asyncio.sleep(1.0)
    await recording.stop()
    await eventually(lambda: alice_call.remote_deafened)
    assert statuses[:2] == [(True, False), (False, False)]
    clip = analysis.load_audio(tmp_path / "bob-hears.wav")
    assert analysis.has_tone(clip.slice(0.1, 0.7), 660.0, min_db=-25)
    assert analysis.level_dbfs(clip.slice(clip.duration - 0.6)) < -50  # deafened: silence
    await bob_call.undeafen()
    await eventually(lambda: not alice_call.remote_deafened)
    await alice_call.hangup()


async def test_blind_transfer(make_bot, tone_file) -> None:
    tone = tone_file(".wav", 523.0, seconds=1.0)
    desk, bob, alice = make_bot("desk"), make_bot("bob"), make_bot("alice", role="user")
    bob_calls: list[Call] = []
    _answer_with(bob, None, bob_calls)

    @desk.on_incoming
    async def send_to_bob(incoming: Incoming) -> None:
        call = await incoming.accept()
        await call.wait_connected(10)
        await call.hold()  # a held call can be transferred
        await call.transfer("bob")

    await asyncio.gather(desk.start(), bob.start(), alice.start())
    new_calls: list[Call] = []
    call = await alice.call("desk")
    call.on("transferred", new_calls.append)
    assert await call.wait_ended(10) == "transferred"
    await eventually(lambda: bool(new_calls))
    to_bob = new_calls[0]
    await to_bob.wait_connected(10)
    assert to_bob.peer == "bob" and bob_calls[0].metadata["transferred_by"] == "desk"
    frames = bob_calls[0].audio_frames()
    to_bob.send_audio_file(tone, loop=True)
    await collect_frames(frames, 0.5)
    assert analysis.has_tone(await collect_frames(frames, 1.0), 523.0, min_db=-25)
    assert desk.active_calls == []
    await to_bob.hangup()


async def test_attended_transfer(make_bot, tone_file) -> None:
    tone = tone_file(".wav", 587.0, seconds=1.0)
    desk, bob, alice = make_bot("desk"), make_bot("bob"), make_bot("alice", role="user")
    bob_calls: list[Call] = []
    _answer_with(bob, None, bob_calls)
    desk_calls: list[Call] = []
    _answer_with(desk, None, desk_calls)
    await asyncio.gather(desk.start(), bob.start(), alice.start())

    new_calls: list[Call] = []
    call = await alice.call("desk")
    call.on("transferred", new_calls.append)
    await call.wait_connected(10)
    await eventually(lambda: bool(desk_calls))
    with_alice = desk_calls[0]
    await with_alice.wait_connected(10)
    await with_alice.hold()
    consultation = await with_alice.attended_transfer("bob")
    await consultation.wait_connected(10)
    assert len(bob_calls) == 1 and bob_calls[0].metadata["consultation_for"] == with_alice.id

    await with_alice.complete_transfer()
    assert with_alice.end_reason == "transferred"
    assert await call.wait_ended(5) == "transferred"
    assert await consultation.wait_ended(10) == "transferred"
    await eventually(lambda: bool(new_calls))
    await new_calls[0].wait_connected(10)
    await eventually(
        lambda: len(bob.active_calls) == 1 and bob.active_calls[0].state == "connected"
    )
    replacing = bob.active_calls[0]
    assert len(bob_calls) == 1  # bob's handler did not run again: the call was taken over
    assert replacing.peer == "alice"
    frames = replacing.audio_frames()
    new_calls[0].send_audio_file(tone, loop=True)
    await collect_frames(frames, 0.5)
    assert analysis.has_tone(await collect_frames(frames, 1.0), 587.0, min_db=-25)
    await new_calls[0].hangup()


async def test_switching_sources_mid_call_needs_no_renegotiation(make_bot, tone_file) -> None:
    first, second = tone_file(".wav", 440.0, seconds=1.0), tone_file(".ogg", 880.0, seconds=1.0)
    bob_tone = tone_file(".wav", 1000.0, seconds=1.0)
    alice_call, bob_call = await _connected_pair(make_bot, bob_tone)
    sender = alice_call.peer_connection.getSenders()[0]
    ssrc = sender._ssrc
    at_bob = bob_call.audio_frames()

    await alice_call.set_audio_source(first)
    await collect_frames(at_bob, 0.4)
    assert abs(analysis.dominant_frequency(await collect_frames(at_bob, 0.6)) - 440) <= 5
    await alice_call.set_audio_source(second)
    await collect_frames(at_bob, 0.4)
    assert abs(analysis.dominant_frequency(await collect_frames(at_bob, 0.6)) - 880) <= 5
    await alice_call.set_audio_source(alice_call.remote_track("audio"))  # echo bob's 1000 Hz
    await collect_frames(at_bob, 0.4)
    assert abs(analysis.dominant_frequency(await collect_frames(at_bob, 0.6)) - 1000) <= 5

    assert alice_call.peer_connection.signalingState == "stable"
    assert alice_call.peer_connection.getSenders()[0] is sender and sender._ssrc == ssrc
    await alice_call.hangup()


async def test_presence(make_bot) -> None:
    alice, bob = make_bot("alice", role="user"), make_bot("bob")
    _answer_with(bob)
    await asyncio.gather(alice.start(), bob.start())
    updates: list[tuple[str, str, str | None]] = []
    lists: list[list[dict]] = []
    alice.on("presence_update", lambda user, status, text: updates.append((user, status, text)))
    alice.on("presence_list", lists.append)

    await alice.subscribe_presence(["bob", "carol"])
    await eventually(lambda: bool(lists))
    assert {s["user"]: s["status"] for s in lists[0]} == {"bob": "available", "carol": "unknown"}

    await bob.set_presence("away", text="lunch")
    await eventually(lambda: ("bob", "away", "lunch") in updates)
    call = await alice.call("bob")
    await call.wait_connected(10)
    await eventually(lambda: alice.presence["bob"]["status"] == "on_call")
    await call.hangup()
    await eventually(lambda: alice.presence["bob"]["status"] == "away")

    carol = make_bot("carol", role="user")  # a user: seen only by those she allows
    await carol.start()
    await carol.set_presence("available", visible_to=["alice"])
    await eventually(lambda: alice.presence["carol"]["status"] == "available")
    await bob.stop()
    await eventually(lambda: alice.presence["bob"]["status"] == "offline")
    statuses = [status for user, status, _ in updates if user == "bob"]
    assert statuses == ["away", "on_call", "away", "offline"]


async def test_stats_per_direction(make_bot, tone_file, relay) -> None:
    alice_call, _ = await _connected_pair(make_bot, tone_file(".wav", 440.0, seconds=1.0))
    alice_call.send_audio_file(tone_file(".wav", 660.0, seconds=1.0), loop=True)

    def settled(stats: dict) -> bool:  # RTT needs the peer's RTCP receiver report (every ~1 s)
        audio, heard = stats["sent"].get("audio", {}), stats["received"].get("audio", {})
        return audio.get("rtt") is not None and audio["packets"] > 80 and heard["frames"] > 80

    stats = await eventually(alice_call.stats, "RTT and 80 packets each way", until=settled)
    assert 0 < stats["sent"]["audio"]["rtt"] < 0.5
    assert stats["sent"]["audio"]["codec"] == "opus/48000/2"
    assert stats["sent"]["audio"]["packets"] > 80 and stats["sent"]["audio"]["bytes"] > 1000
    received = stats["received"]["audio"]
    assert received["codec"] == "opus/48000/2" and received["packets"] > 80
    assert received["frames"] > 80 and 0 <= received["jitter"] < 0.1
    assert stats["transport"]["bytes_received"] > 1000
    assert isinstance(stats["sent"]["audio"]["dropped"], int)
    assert 0 <= stats["process"]["loop_lag"] <= stats["process"]["loop_lag_p99"] + 1
    # the process's media clock is also on the relay's /metrics (bots and relay share it)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    text = (await asyncio.to_thread(opener.open, f"{relay.http_url}/metrics", None, 5)).read()
    assert b"callbot_media_clock_lag_seconds " in text
    assert b"callbot_audio_slots_dropped_total " in text
    await alice_call.hangup()
    final = await alice_call.stats()  # kept after the end
    assert final["sent"]["audio"]["packets"] >= stats["sent"]["audio"]["packets"]


class _HostilePresence(MitmRelay):
    """A relay path that turns bob's "away" update into one whose `user` is not a string."""

    async def _from_relay(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("type") == "presence_update" and message.get("status") == "away":
            message["user"] = ["bob"]
        return await super()._from_relay(message)


async def test_presence_update_with_a_non_string_user_is_ignored(
    relay, make_bot, caplog: pytest.LogCaptureFixture
) -> None:
    async with _HostilePresence(relay.url) as mitm:
        alice = Bot("alice", server=mitm.url, token=relay.mint("alice", role="user"), role="user")
        bob = make_bot("bob")
        await asyncio.gather(alice.start(), bob.start())
        updates: list[tuple[object, str, str | None]] = []
        lists: list[list[dict[str, Any]]] = []
        alice.on("presence_update", lambda user, status, text: updates.append((user, status, text)))
        alice.on("presence_list", lists.append)
        await alice.subscribe_presence(["bob"])
        await eventually(lambda: bool(lists))
        await bob.set_presence("away")
        await bob.set_presence("dnd")
        await eventually(lambda: ("bob", "dnd", None) in updates)
        await alice.stop()
    assert [status for _, status, _ in updates] == ["dnd"]
    assert all(isinstance(user, str) for user in alice.presence)
    assert "handling relay message" not in caplog.text


async def test_hanging_up_together_is_no_error(make_bot, caplog: pytest.LogCaptureFixture) -> None:
    """Both ends hang up at once: one hangup reaches the relay after the call is gone, and its
    `call_not_found` answer is expected, not an error of a call that has already ended."""
    call, bob_call = await _connected_pair(make_bot, None)
    errors: list[Any] = []
    for end in (call, bob_call):
        end.on("error", errors.append)
    with caplog.at_level("INFO"):
        await asyncio.gather(call.hangup(), bob_call.hangup())
        await asyncio.sleep(1.0)  # the relay's answers to both hangups arrive
    assert (call.state, bob_call.state) == ("ended", "ended")
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
