"""The SIP test peers proven against each other, with no callbot SIP in the loop: SIPp calls
baresip, baresip calls SIPp, baresip registers with SIPp's and Kamailio's registrars. What a
peer receives is checked by frequency (Goertzel/FFT) and by the digits it reports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from baresip_peer import BaresipPeer
from kamailio_server import Kamailio
from sipp_peer import SippFactory, SippFailed

from callbot.media import analysis

Peer = Callable[..., Awaitable[BaresipPeer]]


def assert_tone(recording: Path, frequency: float) -> None:
    """The recording's strongest component is `frequency`, well above the noise floor."""
    assert abs(analysis.dominant_frequency(recording) - frequency) < 15, recording
    assert analysis.tone_level_db(recording, frequency) > -20, recording


async def test_sipp_caller_tone_and_rfc4733_digits_reach_baresip(
    baresip_peer: Peer, sipp: SippFactory, ulaw_tone: Callable[..., Path]
) -> None:
    peer = await baresip_peer(user="desk")
    caller = sipp.uac(peer.uri, ulaw_tone(1000.0), digits="19#", reinvite_ms=300)
    async with caller:
        await peer.wait_established()
        await caller.wait()
    await peer.wait_closed()
    assert peer.received_digits() == "19#", peer.events
    [recording] = peer.recordings()
    assert_tone(recording, 1000.0)


async def test_sipp_caller_sends_sip_info_digits(
    baresip_peer: Peer, sipp: SippFactory, ulaw_tone: Callable[..., Path]
) -> None:
    peer = await baresip_peer(user="desk")
    caller = sipp.uac(peer.uri, ulaw_tone(1000.0), digits="5#", dtmf="info", reinvite_ms=300)
    async with caller:
        await caller.wait()  # each INFO got its 200 from baresip
    info = [m for m in caller.messages().split("\n\n") if m.startswith("INFO ")]
    assert "Signal=5" in caller.messages() and "Signal=#" in caller.messages(), info


async def test_baresip_calls_sipp_callee_and_records_its_tone(
    baresip_peer: Peer, sipp: SippFactory, ulaw_tone: Callable[..., Path], pcm_tone
) -> None:
    callee = sipp.uas(ulaw_tone(1000.0))
    peer = await baresip_peer(user="caller", play=pcm_tone(440.0))
    async with callee:
        await peer.dial(callee.uri)
        await peer.wait_established()
        await asyncio.sleep(1.5)
        await peer.hangup()
        await callee.wait()
    await peer.wait_closed()
    [recording] = peer.recordings()
    assert_tone(recording, 1000.0)


async def test_baresip_hears_early_media_before_the_answer(
    baresip_peer: Peer, sipp: SippFactory, ulaw_tone: Callable[..., Path]
) -> None:
    callee = sipp.uas(ulaw_tone(1000.0), early=True, ring_ms=1500)
    peer = await baresip_peer(user="caller")
    async with callee:
        await peer.dial(callee.uri)
        progress = await peer.wait_event("CALL_PROGRESS")
        established = await peer.wait_established()
        await peer.hangup()
        await callee.wait()
    assert peer.events.index(progress) < peer.events.index(established)
    [recording] = peer.recordings()
    assert_tone(recording, 1000.0)  # the tone was already flowing during the 183


@pytest.mark.parametrize(
    ("code", "reason"), [(486, "Busy Here"), (603, "Decline"), (480, "Temporarily Unavailable")]
)
async def test_sipp_callee_refuses_with_the_code_asked(
    baresip_peer: Peer, sipp: SippFactory, code: int, reason: str
) -> None:
    callee = sipp.uas_reject(code, reason)
    peer = await baresip_peer(user="caller")
    async with callee:
        await peer.dial(callee.uri)
        closed = await peer.wait_closed()
        await callee.wait()
    assert closed["param"] == f"{code} {reason}"


async def test_baresip_registers_with_the_sipp_registrar_by_digest(
    baresip_peer: Peer, sipp: SippFactory
) -> None:
    registrar = sipp.registrar("bot", "s3cret")
    async with registrar:
        peer = await baresip_peer(
            user="bot", domain=registrar.address, password="s3cret", reg_interval=3600
        )
        await peer.wait_event("REGISTER_OK")
        await registrar.wait()
    assert "Authorization: Digest" in registrar.messages()


async def test_the_sipp_registrar_refuses_a_wrong_password(
    baresip_peer: Peer, sipp: SippFactory
) -> None:
    registrar = sipp.registrar("bot", "s3cret")
    async with registrar:
        peer = await baresip_peer(
            user="bot", domain=registrar.address, password="wrong", reg_interval=3600
        )
        failed = await peer.wait_event("REGISTER_FAIL")
        with pytest.raises(SippFailed):
            await registrar.wait()
    assert "403" in failed["param"]


async def test_kamailio_registers_routes_and_forgets_bindings_on_restart(
    baresip_peer: Peer, kamailio: Kamailio, sip_users: dict[str, str]
) -> None:
    bot = await baresip_peer(
        user="bot", domain=kamailio.address, password=sip_users["bot"], reg_interval=3600
    )
    await bot.wait_event("REGISTER_OK")
    caller = await baresip_peer(user="caller")
    await caller.dial(f"sip:bot@{kamailio.address}")
    await bot.wait_established()
    await caller.hangup()
    await bot.wait_closed()

    await kamailio.restart()
    mark = len(caller.events)
    await caller.dial(f"sip:bot@{kamailio.address}")
    closed = await caller.wait_event("CALL_CLOSED", after=mark)
    assert closed["param"].startswith("404"), closed  # the binding died with the registrar

    mark = len(bot.events)
    await bot.register_again()  # as a client does on its next refresh
    await bot.wait_event("REGISTER_OK", after=mark)
    # reached again; baresip 1.0's re-created account sometimes drops the very first INVITE
    # after its REGISTER (seen once in CI under load), so a second dial is allowed
    for _ in range(2):
        mark = len(caller.events)
        await caller.dial(f"sip:bot@{kamailio.address}")
        event = await caller.wait_event(("CALL_ESTABLISHED", "CALL_CLOSED"), after=mark)
        if event["type"] == "CALL_ESTABLISHED":
            return
        await asyncio.sleep(1)
    raise AssertionError(f"bot not reached after re-registering: {caller.events[mark:]}")


async def test_kamailio_challenges_and_refuses_a_wrong_password(
    baresip_peer: Peer, kamailio: Kamailio
) -> None:
    bot = await baresip_peer(
        user="bot", domain=kamailio.address, password="wrong", reg_interval=3600
    )
    failed = await bot.wait_event("REGISTER_FAIL")
    assert failed["param"].startswith("401") or failed["param"].startswith("403"), failed
