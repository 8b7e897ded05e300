"""A callbot bot against independent SIP peers on 127.0.0.1 (fixtures in tests/sip/conftest.py):
Debian's baresip and SIPp call the bot and are called by it, Kamailio registers it. What each
side receives is checked by frequency and by the digits it reports; hostile input (a malformed
INVITE, an offer with no codec we have, a peer that vanishes, a wrong password) gets a typed
outcome and no traceback."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from baresip_peer import BaresipPeer
from conftest import SippFactory
from kamailio_server import Kamailio

from callbot.bot import Bot, Incoming
from callbot.config import CallConfig
from callbot.errors import SipError
from callbot.media import analysis
from callbot.sip import SipSettings, stack

from helpers import eventually

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("baresip") is None, reason="pip install 'callbot[sip]'"
)

Peer = Callable[..., Awaitable[BaresipPeer]]
HOST = "127.0.0.1"


def assert_tone(recording: Path, frequency: float) -> None:
    """The recording's strongest component is `frequency`, well above the noise floor."""
    assert abs(analysis.dominant_frequency(recording) - frequency) < 15, recording
    assert analysis.tone_level_db(recording, frequency) > -30, recording


@pytest.fixture
def sip_bot(make_bot: Callable[..., Bot]) -> Callable[..., Awaitable[tuple[Bot, str]]]:
    """Factory: a started bot `ivr` with a SIP address on a free port (and its address)."""

    async def make(user: str = "ivr", **kwargs: Any) -> tuple[Bot, str]:
        settings = kwargs.pop("settings", {})
        address = f"sip:{user}@{HOST}:{stack.free_port(HOST)}"
        bot = make_bot(user, sip=SipSettings(address, **settings), **kwargs)
        await bot.start()
        return bot, address

    return make


def answer_with(prompt: Path, recording: Path, calls: list[Any]) -> Callable[..., Any]:
    """An on_incoming handler: accept, record what arrives, play `prompt`."""

    async def handler(incoming: Incoming) -> None:
        call = await incoming.accept()
        calls.append(call)
        call.record_incoming(recording)
        call.send_audio_file(prompt)

    return handler


@pytest.mark.parametrize(
    ("codec", "extra"),
    [("PCMU", ()), ("opus/48000/2", ()), ("PCMU", ("mediaenc=srtp-mand",))],
    ids=["pcmu", "opus", "srtp"],
)
async def test_bot_answers_baresip_plays_a_prompt_and_gets_its_digits(
    sip_bot: Any, baresip_peer: Peer, pcm_tone: Any, tone_file: Any, tmp_path: Path,
    codec: str, extra: tuple[str, ...],
) -> None:  # fmt: skip
    bot, address = await sip_bot()
    calls: list[Any] = []
    bot.on_incoming(answer_with(tone_file(frequency=1000, seconds=4), tmp_path / "bot.wav", calls))
    rate = 48000 if codec.startswith("opus") else 8000
    peer = await baresip_peer(user="alice", play=pcm_tone(440.0, 4, rate), play_rate=rate,
                              codecs=(codec,), extra=extra)  # fmt: skip
    await peer.dial(address)
    await peer.wait_established()
    call = await eventually(lambda: calls and calls[0], "the bot's call")
    await asyncio.sleep(1.0)
    await peer.send_dtmf("159#")
    await eventually(lambda: call.received_dtmf, "the digits", until=lambda d: d == "159#")
    await peer.hangup()
    assert await call.wait_ended(10) == "remote_hangup"
    assert call.peer.startswith("sip:alice@")
    assert_tone(tmp_path / "bot.wav", 440.0)
    [heard] = peer.recordings()
    assert_tone(heard, 1000.0)


async def test_bot_calls_baresip_sends_digits_and_hangs_up(
    make_bot: Callable[..., Bot], baresip_peer: Peer, pcm_tone: Any, tone_file: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    peer = await baresip_peer(user="desk", play=pcm_tone(440.0, 4))
    bot = make_bot("dialer")  # no SIP address: calls go out from a free port
    call = await bot.call(peer.uri)
    await call.wait_connected(10)
    call.record_incoming(tmp_path / "bot.wav")
    call.send_audio_file(tone_file(frequency=1000, seconds=3))
    await asyncio.sleep(1.5)
    await call.send_dtmf("47#")
    await eventually(peer.received_digits, "digits at baresip", until=lambda d: d == "47#")
    await call.hangup()
    await peer.wait_closed()
    assert call.end_reason == "hangup"
    assert_tone(tmp_path / "bot.wav", 440.0)
    [heard] = peer.recordings()
    assert_tone(heard, 1000.0)


@pytest.mark.parametrize("dtmf", ["rfc4733", "info"])
async def test_sipp_calls_the_bot_with_rtp_and_digits(
    sip_bot: Any, sipp: SippFactory, ulaw_tone: Any, tone_file: Any, tmp_path: Path, dtmf: str
) -> None:
    bot, address = await sip_bot()
    calls: list[Any] = []
    bot.on_incoming(answer_with(tone_file(frequency=600, seconds=3), tmp_path / "bot.wav", calls))
    async with sipp.uac(address, ulaw_tone(1000.0), digits="123#", dtmf=dtmf) as caller:
        await caller.wait()
    call = calls[0]
    assert await call.wait_ended(10) == "remote_hangup"
    assert call.received_dtmf == "123#"
    assert_tone(tmp_path / "bot.wav", 1000.0)


async def test_bot_calls_a_sipp_callee_and_records_its_tone(
    make_bot: Callable[..., Bot], sipp: SippFactory, ulaw_tone: Any, tmp_path: Path
) -> None:
    bot = make_bot("dialer")
    async with sipp.uas(ulaw_tone(800.0)) as callee:
        call = await bot.call(callee.uri)
        await call.wait_connected(10)
        call.record_incoming(tmp_path / "bot.wav")
        await asyncio.sleep(1.5)
        await call.hangup()
        await callee.wait()
    assert_tone(tmp_path / "bot.wav", 800.0)


async def test_early_media_from_a_sipp_callee_plays_before_the_answer(
    make_bot: Callable[..., Bot], sipp: SippFactory, ulaw_tone: Any, tmp_path: Path
) -> None:
    bot = make_bot("dialer")
    async with sipp.uas(ulaw_tone(700.0), early=True, ring_ms=2000) as callee:
        call = await bot.call(callee.uri)
        await eventually(lambda: call.state, "early media", until=lambda s: s == "early")
        call.record_incoming(tmp_path / "early.wav")
        await call.wait_connected(10)
        await call.hangup()
        await callee.wait()
    assert_tone(tmp_path / "early.wav", 700.0)


@pytest.mark.parametrize(
    ("code", "reason", "ended"),
    [(486, "Busy Here", "rejected:busy"), (603, "Decline", "rejected:decline"),
     (480, "Temporarily Unavailable", "no_answer")],
)  # fmt: skip
async def test_sip_refusals_map_to_typed_end_reasons(
    make_bot: Callable[..., Bot], sipp: SippFactory, code: int, reason: str, ended: str
) -> None:
    bot = make_bot("dialer")
    async with sipp.uas_reject(code, reason) as callee:
        call = await bot.call(callee.uri)
        assert await call.wait_ended(10) == ended
        await callee.wait()


async def test_a_peer_that_vanishes_ends_the_call_timeout(
    sip_bot: Any, baresip_peer: Peer, pcm_tone: Any
) -> None:
    bot, address = await sip_bot(config=CallConfig(media_timeout=2))
    calls: list[Any] = []

    @bot.on_incoming
    async def take(incoming: Incoming) -> None:
        calls.append(await incoming.accept())

    peer = await baresip_peer(user="alice", play=pcm_tone(440.0, 20))
    await peer.dial(address)
    await peer.wait_established()
    call = await eventually(lambda: calls and calls[0], "the bot's call")
    await call.wait_connected(10)
    assert peer.process is not None
    peer.process.kill()  # no BYE: its RTP just stops
    assert await call.wait_ended(10) == "timeout"


def sip_request(port: int, text: str) -> str:
    """Send one SIP request over UDP to the bot; its first response line ("" if none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(3)
        local = sock.getsockname()[1]
        sock.sendto(text.replace("LOCAL", str(local)).replace("\n", "\r\n").encode(),
                    (HOST, port))  # fmt: skip
        try:
            while True:
                line = sock.recv(65536).decode(errors="replace").split("\r\n", 1)[0]
                if not line.startswith("SIP/2.0 1"):  # skip provisional responses
                    return line
        except TimeoutError:
            return ""


INVITE = """INVITE sip:ivr@127.0.0.1:PORT SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:LOCAL;branch=z9hG4bK-BRANCH
From: <sip:probe@127.0.0.1:LOCAL>;tag=probe
To: <sip:ivr@127.0.0.1:PORT>
Call-ID: BRANCH@probe
CSeq: 1 INVITE
Contact: <sip:probe@127.0.0.1:LOCAL>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: LENGTH

"""
G729_ONLY = """v=0
o=probe 1 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 40000 RTP/AVP 18
a=rtpmap:18 G729/8000
"""


async def test_hostile_invites_get_sip_errors_and_the_bot_goes_on(
    sip_bot: Any, baresip_peer: Peer, caplog: pytest.LogCaptureFixture
) -> None:
    bot, address = await sip_bot()
    offered: list[Incoming] = []
    bot.on_incoming(lambda incoming: offered.append(incoming) or incoming.accept())
    port = int(address.rsplit(":", 1)[1])
    sdp = G729_ONLY.replace("\n", "\r\n")
    codec = INVITE.replace("PORT", str(port)).replace("BRANCH", "codec")
    codec = codec.replace("LENGTH", str(len(sdp))) + G729_ONLY
    assert await asyncio.to_thread(sip_request, port, codec) == "SIP/2.0 488 Not Acceptable Here"
    broken = INVITE.replace("PORT", str(port)).replace("BRANCH", "broken")
    broken = broken.replace("CSeq: 1 INVITE", "CSeq: nonsense").replace("LENGTH", "9999")
    answer = await asyncio.to_thread(sip_request, port, broken + "v=0\n")
    assert answer == "" or answer.startswith("SIP/2.0 4"), answer
    assert offered == []
    peer = await baresip_peer(user="alice")  # the bot still takes calls
    await peer.dial(address)
    await peer.wait_established()
    assert len(offered) == 1
    assert "Traceback" not in caplog.text


async def call_through(peer: BaresipPeer, uri: str) -> str:
    """Dial `uri` from `peer`: "CALL_ESTABLISHED" (then hung up) or "CALL_CLOSED" (refused)."""
    start = len(peer.events)
    await peer.dial(uri)
    outcome = await eventually(
        lambda: next((e["type"] for e in peer.events[start:]
                      if e.get("type") in ("CALL_ESTABLISHED", "CALL_CLOSED")), None),
        f"the outcome of a call to {uri}",
    )  # fmt: skip
    if outcome == "CALL_ESTABLISHED":
        await peer.hangup()
        await eventually(lambda: [e for e in peer.events[start:] if e.get("type") == "CALL_CLOSED"],
                         "the hangup")  # fmt: skip
    return str(outcome)


async def test_a_registered_bot_is_reached_through_kamailio_and_after_its_restart(
    sip_bot: Any, baresip_peer: Peer, kamailio: Kamailio, sip_users: dict[str, str]
) -> None:
    settings = {"registrar": kamailio.uri, "password": sip_users["bot"], "register_every": 10}
    bot, _ = await sip_bot("bot", settings=settings)
    answered: list[Any] = []
    bot.on_incoming(lambda incoming: answered.append(incoming) or incoming.accept())
    peer = await baresip_peer(user="caller")
    bot_uri = f"sip:bot@{kamailio.address}"
    assert await call_through(peer, bot_uri) == "CALL_ESTABLISHED"
    await kamailio.restart(pause=1.0)  # forgets every binding: only a new REGISTER reaches us
    await eventually(lambda: call_through(peer, bot_uri), "the bot registered again",
                     until=lambda outcome: outcome == "CALL_ESTABLISHED", timeout=30,
                     interval=1)  # fmt: skip
    assert len(answered) == 2


async def test_a_wrong_password_is_a_sip_error_at_start(
    make_bot: Callable[..., Bot], kamailio: Kamailio
) -> None:
    address = f"sip:bot@{HOST}:{stack.free_port(HOST)}"
    bot = make_bot("bot", sip=SipSettings(address, registrar=kamailio.uri, password="wrong"))
    with pytest.raises(SipError, match="refused our credentials") as raised:
        await bot.start()
    assert raised.value.code == "registration_refused"


PCMU_OFFER = G729_ONLY.replace("RTP/AVP 18", "RTP/AVP 0").replace("G729/8000", "PCMU/8000")


async def test_the_invite_headers_a_bot_needs_are_in_incoming_metadata(sip_bot: Any) -> None:
    bot, address = await sip_bot()
    seen: list[Incoming] = []

    @bot.on_incoming
    async def refuse(incoming: Incoming) -> None:
        seen.append(incoming)
        await incoming.decline("busy")

    port = int(address.rsplit(":", 1)[1])
    invite = INVITE.replace("PORT", str(port)).replace("BRANCH", "headers")
    invite = invite.replace("From: <sip:probe@", 'From: "Alice Example" <sip:probe@')
    invite = invite.replace("Max-Forwards: 70\n", "Max-Forwards: 70\n"
                            "P-Asserted-Identity: <sip:+15551234@pbx.test>\n"
                            "Diversion: <sip:100@pbx.test>;reason=no-answer\n")  # fmt: skip
    sdp = PCMU_OFFER.replace("\n", "\r\n")
    invite = invite.replace("LENGTH", str(len(sdp))) + PCMU_OFFER
    assert await asyncio.to_thread(sip_request, port, invite) == "SIP/2.0 486 Busy Here"
    [incoming] = seen
    assert incoming.from_.startswith("sip:probe@127.0.0.1")
    assert incoming.metadata["display_name"] == "Alice Example"
    assert incoming.metadata["p-asserted-identity"] == "<sip:+15551234@pbx.test>"
    assert incoming.metadata["diversion"] == "<sip:100@pbx.test>;reason=no-answer"
    assert incoming.metadata["sip_call_id"] == "headers@probe"


async def test_send_dtmf_returns_once_its_last_key_is_on_the_wire(
    make_bot: Callable[..., Bot], baresip_peer: Peer
) -> None:
    """Hanging up right after `send_dtmf` must not cut its last key off (the stack sends a
    key's events after the request to send it returns)."""
    peer = await baresip_peer(user="desk")
    call = await make_bot("dialer").call(peer.uri)
    await call.wait_connected(10)
    await call.send_dtmf("1#")
    await call.hangup()
    await peer.wait_closed()
    assert peer.received_digits() == "1#"
