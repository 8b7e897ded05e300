"""callbot/_compat: the one seam onto aiortc/aioice internals, checked at import, patching
nothing until a bot or call exists."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from callbot import _compat
from callbot.direct import connect_direct
from callbot.media import analysis, fastpath
from callbot.media.jitter import AudioJitterBuffer


@pytest.fixture
def recheck(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """After the test took internals away: put them back, then check again."""
    yield
    monkeypatch.undo()
    assert _compat.recheck().missing == {}


def test_check_passes_on_the_pinned_versions() -> None:
    report = _compat.recheck()
    assert report.missing == {}
    assert all(_compat.available(feature) for feature in _compat.FALLBACKS)
    assert fastpath.supported()


def test_missing_method_is_named_and_turns_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, recheck: None
) -> None:
    monkeypatch.delattr(RTCRtpSender, "_run_rtp")
    with caplog.at_level(logging.WARNING, logger="callbot.compat"):
        report = _compat.recheck()
    assert list(report.missing) == ["fastpath"]
    assert "RTCRtpSender._run_rtp" in report.missing["fastpath"]
    assert not fastpath.supported()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("RTCRtpSender._run_rtp" in w and "aiortc's own" in w for w in warnings)


def test_instance_attribute_missing_from_init_is_named(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, recheck: None
) -> None:
    original = RTCDtlsTransport.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:  # names none of the internals
        original(self, *args, **kwargs)

    monkeypatch.setattr(RTCDtlsTransport, "__init__", init)
    with caplog.at_level(logging.WARNING, logger="callbot.compat"):
        _compat.recheck()
    assert "RTCDtlsTransport.__tx_bytes" in _compat.missing("fastpath")
    assert "RTCDtlsTransport._ssl" in _compat.missing("release")
    assert not fastpath.supported()
    assert "RTCDtlsTransport.__tx_bytes" in caplog.text


def test_changed_host_address_function_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, recheck: None
) -> None:
    def other(family: int) -> list[str]:  # a different signature: not what callbot replaces
        return []

    monkeypatch.setattr(aioice.ice, "get_host_addresses", other)
    with caplog.at_level(logging.WARNING, logger="callbot.compat"):
        _compat.recheck()
    _compat.ensure_patched()
    assert aioice.ice.get_host_addresses is other
    assert "get_host_addresses" in caplog.text and "per-call ICE address filter" in caplog.text


async def test_call_falls_back_to_aiortcs_path_with_its_audio_intact(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tone_file, recheck: None
) -> None:
    """A changed sender internal: the check turns the fast path off and calls still carry
    audio, through aiortc's own sender task."""
    original = RTCRtpSender._run_rtp

    async def run_rtp(self: Any, codec: Any, *, extra: Any = None) -> None:
        await original(self, codec)

    monkeypatch.setattr(RTCRtpSender, "_run_rtp", run_rtp)
    _compat.recheck()
    assert not fastpath.supported()
    caller, callee = await connect_direct()
    try:
        recording = callee.record_incoming(audio_path=tmp_path / "at-callee.wav")
        assert await caller.send_audio_file(tone_file(".wav", 440.0, seconds=1.5)) == "finished"
        await asyncio.sleep(0.3)
        await recording.stop()
        assert caller.peer_connection is not None
        sender = next(s for s in caller.peer_connection.getSenders() if s.kind == "audio")
        assert "_run_rtp" not in vars(sender)  # aiortc's own task sent it
    finally:
        await caller.hangup()
    clip = analysis.load_audio(tmp_path / "at-callee.wav")
    assert abs(analysis.dominant_frequency(clip) - 440.0) <= 5
    assert abs(analysis.active_seconds(clip) - 1.5) <= 0.15


_PROBE = """
import asyncio, json, sys
import aioice.ice, aiortc.codecs

def state():
    return {
        "host_addresses": aioice.ice.get_host_addresses.__module__,
        "telephone_event": any(
            c.mimeType == "audio/telephone-event" for c in aiortc.codecs.CODECS["audio"]
        ),
    }

import callbot
before = state()
if sys.argv[1] == "bot":
    callbot.Bot("probe")
else:
    async def create_call():
        callbot.Call(direction="outbound", peer="x", signaling=None)
    asyncio.run(create_call())
print(json.dumps({"import": before, "created": state()}))
"""


@pytest.mark.parametrize("create", ["bot", "call"])
def test_import_patches_nothing_until_a_bot_or_call_exists(create: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, create], capture_output=True, text=True, check=True
    ).stdout
    states = json.loads(out.splitlines()[-1])
    assert states["import"] == {"host_addresses": "aioice.ice", "telephone_event": False}
    assert states["created"] == {"host_addresses": "callbot.ice", "telephone_event": True}


async def test_call_without_callbots_receive_buffer_still_records_audio(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tone_file, recheck: None
) -> None:
    """A changed receiver internal: aiortc's own jitter buffer and decoder feed the call."""
    original = RTCRtpReceiver._handle_rtp_packet

    async def handle(self: Any, packet: Any, arrival_time_ms: int, extra: Any = None) -> None:
        await original(self, packet, arrival_time_ms)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", handle)
    _compat.recheck()
    assert not _compat.available("jitter") and not fastpath.supported()
    caller, callee = await connect_direct()
    try:
        recording = callee.record_incoming(audio_path=tmp_path / "at-callee.wav")
        assert await caller.send_audio_file(tone_file(".wav", 440.0, seconds=1.5)) == "finished"
        await asyncio.sleep(0.5)
        await recording.stop()
        assert callee.peer_connection is not None
        transceivers = callee.peer_connection.getTransceivers()
        receiver = next(t.receiver for t in transceivers if t.kind == "audio")
        assert not isinstance(_compat.rtp.jitter_buffer(receiver), AudioJitterBuffer)
    finally:
        await caller.hangup()
    clip = analysis.load_audio(tmp_path / "at-callee.wav")
    assert abs(analysis.dominant_frequency(clip) - 440.0) <= 5
    assert abs(analysis.active_seconds(clip) - 1.5) <= 0.15
