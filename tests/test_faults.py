"""Faults: a peer process killed mid-call, a relay restart, a file that turns out corrupt
mid-playback, a disk that fills up while recording. Each time the bot reports a typed error,
other calls go on, and what was recorded stays playable."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from callbot import Bot, Call, MediaError
from callbot.media import analysis, writers
from callbot.signaling.relay import Relay
from callbot.testing import generate

from helpers import collect_frames, eventually

ROOT = Path(__file__).resolve().parents[1]


async def test_peer_process_killed_mid_call(relay: Relay, tmp_path: Path) -> None:
    tone = generate.write_tone(tmp_path / "tone.wav", 440.0, seconds=1.0)
    env = {**os.environ, "CALLBOT_STATE_DIR": str(relay.state.directory)}
    log = (tmp_path / "victim.log").open("w")
    victim = subprocess.Popen(
        [sys.executable, "-m", "callbot", "run", "--as", "victim", "--server", relay.url,
         "--workers", "1", "--plugin", "autoaccept", "--plugin", f"prompt:file={tone},loop=true"],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip
    alice = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user")
    try:
        await eventually(lambda: "bot victim ready" in (tmp_path / "victim.log").read_text(),
                         "the victim bot", timeout=30)  # fmt: skip
        await alice.start()
        call = await alice.call("victim")
        await call.wait_connected(15)
        recording = call.record_incoming(audio_path=tmp_path / "before-the-end.wav")
        await asyncio.sleep(2.0)
        os.kill(victim.pid, signal.SIGKILL)  # the peer vanishes without a word
        killed = time.monotonic()
        assert await call.wait_ended(20) == "timeout"
        noticed = time.monotonic() - killed
        assert noticed < 15, noticed
        assert recording.audio is not None and recording.audio.stopped
        clip = analysis.load_audio(tmp_path / "before-the-end.wav")
        assert analysis.active_seconds(clip) > 1.5
        assert abs(analysis.dominant_frequency(clip) - 440.0) <= 5
    finally:
        if victim.poll() is None:
            victim.kill()
        victim.wait(10)
        log.close()
        await alice.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_relay_restart_restores_presence(tmp_path: Path) -> None:
    port, state = _free_port(), tmp_path / "state"
    relay = await Relay(port=port, state_dir=state).start()
    alice = Bot("alice", server=relay.url, token=relay.mint("alice"), role="user")
    bob = Bot("bob", server=relay.url, token=relay.mint("bob", role="bot"))
    try:
        await asyncio.gather(alice.start(), bob.start())
        await alice.subscribe_presence(["bob"])
        await bob.set_presence("away", text="lunch")
        await eventually(lambda: alice.presence.get("bob", {}).get("status") == "away",
                         "bob away", timeout=5)  # fmt: skip

        await relay.stop()
        await eventually(
            lambda: not alice.connected and not bob.connected, "disconnection", timeout=5
        )
        relay = await Relay(port=port, state_dir=state).start()
        await eventually(lambda: alice.connected and bob.connected, "both reconnected", timeout=20)
        # bob's status and alice's subscription came back with the connections
        await eventually(
            lambda: alice.presence["bob"]["status"] == "away", "bob away again", timeout=5
        )
        await bob.set_presence("dnd")
        await eventually(lambda: alice.presence["bob"]["status"] == "dnd", "bob dnd", timeout=5)
    finally:
        await alice.stop()
        await bob.stop()
        await relay.stop()


@pytest.fixture
def corrupt_mp3(tmp_path: Path) -> Path:
    """A 4 s tone whose second half is overwritten with noise bytes."""
    good = generate.write_tone(tmp_path / "good.mp3", 440.0, seconds=4.0)
    data = bytearray(good.read_bytes())
    half = len(data) // 2
    data[half:] = np.random.default_rng(5).integers(0, 256, len(data) - half, np.uint8).tobytes()
    bad = tmp_path / "turns-bad.mp3"
    bad.write_bytes(bytes(data))
    return bad


async def test_file_corrupt_mid_playback(connect_pair, corrupt_mp3: Path, tone_file) -> None:
    after = tone_file(".wav", 660.0, seconds=1.0)
    caller, callee = await connect_pair()
    errors: list[Exception] = []
    caller.on("error", errors.append)
    try:
        frames = callee.audio_frames()
        playback = caller.send_audio_file(corrupt_mp3)  # its start is fine: no error yet
        heard = await collect_frames(frames, 1.0)
        assert analysis.has_tone(heard, 440.0, min_db=-25)
        assert await asyncio.wait_for(playback, 10) == "error"
        assert isinstance(errors[0], MediaError) and "truncated or corrupt" in str(errors[0])
        assert playback.error is errors[0]
        assert caller.state == callee.state == "connected"  # the call goes on
        caller.send_audio_file(after)
        await collect_frames(frames, 0.3)
        assert analysis.has_tone(await collect_frames(frames, 0.5), 660.0, min_db=-25)
    finally:
        await caller.hangup()


async def test_disk_full_while_recording(
    connect_pair, tmp_path: Path, tone_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    tone = tone_file(".wav", 440.0, seconds=1.0)
    real_write = writers.WavWriter.write
    written: dict[int, int] = {}

    def fill_up(self: writers.WavWriter, frame) -> None:  # the disk is full after ~1 s
        written[id(self)] = written.get(id(self), 0) + 1
        if written[id(self)] > 50:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, frame)

    monkeypatch.setattr(writers.WavWriter, "write", fill_up)
    caller, callee = await connect_pair()
    errors: list[Exception] = []
    callee.on("error", errors.append)
    try:
        caller.send_audio_file(tone, loop=True)
        doomed = callee.record_incoming(audio_path=tmp_path / "full.wav")
        other = callee.record_incoming(audio_path=tmp_path / "elsewhere.ogg")
        await eventually(lambda: bool(errors), "the disk-full error", timeout=10)
        assert isinstance(errors[0], MediaError) and "No space left" in str(errors[0])
        assert doomed.audio is not None and doomed.audio.error is errors[0]
        await asyncio.sleep(1.0)
        assert callee.state == "connected"  # the call goes on
        await other.stop()
        assert analysis.active_seconds(tmp_path / "elsewhere.ogg") > 1.5  # kept recording
        kept = analysis.load_audio(tmp_path / "full.wav")  # closed, playable up to the fault
        assert 0.5 < kept.duration < 1.5
        assert abs(analysis.dominant_frequency(kept) - 440) <= 5
    finally:
        await caller.hangup()


async def test_a_call_ending_badly_does_not_disturb_another(connect_pair, tone_file) -> None:
    tone = tone_file(".wav", 523.0, seconds=1.0)
    first, first_peer = await connect_pair()
    second, second_peer = await connect_pair()
    frames = second_peer.audio_frames()
    second.send_audio_file(tone, loop=True)

    @first_peer.on("data")
    def explode(payload: object) -> None:
        raise RuntimeError("handler bug")

    first.send_data("boom")
    assert await first_peer.wait_ended(5) == "error"
    await collect_frames(frames, 0.3)
    assert analysis.has_tone(await collect_frames(frames, 0.8), 523.0, min_db=-25)
    assert isinstance(second, Call) and second.state == "connected"
    await second.hangup()
