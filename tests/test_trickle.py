"""A trickle-ICE caller written against docs/protocol.md (raw WebSocket + its own aiortc peer)
calling a bot: candidates sent right after the offer are never lost, and the bot always
answers with its own candidates.

The relay runs on its own thread (`callbot_relay`), as it runs in its own process in
production, so the bot can receive the offer and the candidates that follow it in one read.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import ClientConnection, connect

from callbot import Bot, Incoming
from callbot.ice import IceConfig, gather_within
from callbot.media import analysis
from callbot.testing import CallbotRelay

from helpers import collect_frames

CANDIDATE_LINE = re.compile(r"^a=(candidate:.*?)\r?$", re.M)


async def _open(relay: CallbotRelay, user: str) -> ClientConnection:
    ws = await connect(relay.url, proxy=None)
    await ws.send(json.dumps({"type": "hello", "v": 1, "token": relay.mint(user)}))
    assert json.loads(await ws.recv())["type"] == "welcome"
    return ws


async def _next(ws: ClientConnection, kind: str, call_id: str) -> dict[str, Any]:
    """The next message of `kind` for `call_id` (others, e.g. call_ringing, skipped)."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == kind and message.get("call_id") == call_id:
            return message
        assert message["type"] in ("call_ringing", "ice"), message


def _send_at_once(ws: ClientConnection, messages: list[dict[str, Any]]) -> None:
    """Send `messages` as WebSocket frames in one write: they reach the relay together, as
    from a client that trickles within a millisecond of its offer."""
    for message in messages:
        ws.protocol.send_text(json.dumps(message).encode())
    ws.transport.write(b"".join(ws.protocol.data_to_send()))


def _tone_bot(relay: CallbotRelay, tone: Path) -> Bot:
    bot = Bot("tone", server=relay.url, token=relay.mint("tone", role="bot"))

    @bot.on_incoming
    async def answer(incoming: Incoming) -> None:
        call = await incoming.accept()
        call.send_audio_file(tone, loop=True)

    return bot


async def _call(ws: ClientConnection, *, trickle: bool) -> tuple[str, list[av.AudioFrame]]:
    """Call the bot from an aiortc peer whose offer carries no candidate: with `trickle`,
    they follow at once as `ice`, then `null` (end of candidates); without, the offer says
    end-of-candidates. Returns the bot's answer and 1 s of the audio received from it once
    connected."""
    call_id = uuid.uuid4().hex
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: asyncio.Queue[Any] = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    pc.addTransceiver("audio", direction="sendrecv")
    config = IceConfig(addresses=("127.0.0.1",))
    await gather_within(config, pc.setLocalDescription(await pc.createOffer()))
    sdp = pc.localDescription.sdp
    candidates = CANDIDATE_LINE.findall(sdp)
    assert candidates
    offer = CANDIDATE_LINE.sub("", sdp).replace("\r\n\r\n", "\r\n")
    if trickle:
        offer = offer.replace("a=end-of-candidates\r\n", "")
    else:
        assert "a=end-of-candidates" in offer
    call = {"call_id": call_id, "to": "tone", "v": 1}
    messages = [{**call, "type": "call_offer", "sdp": offer}]
    if trickle:  # right after the offer, as most non-browser stacks do
        for candidate in candidates:
            init = {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}
            messages.append({**call, "type": "ice", "candidate": init})
    try:
        _send_at_once(ws, messages)
        # This loop (the bot's) is busy while the relay forwards: the bot reads the offer and
        # the candidates together, and end-of-candidates a little later.
        time.sleep(0.2)
        if trickle:
            await ws.send(json.dumps({**call, "type": "ice", "candidate": None}))
        answer = (await _next(ws, "call_answer", call_id))["sdp"]
        if "a=candidate:" not in answer:
            return answer, []
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def state() -> None:
            if pc.connectionState == "connected":
                connected.set()

        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        track = await asyncio.wait_for(tracks.get(), 10)
        await asyncio.wait_for(connected.wait(), 10)

        async def frames() -> Any:
            while True:
                yield await track.recv()

        return answer, await collect_frames(frames(), 1.0)
    finally:
        await ws.send(json.dumps({**call, "type": "hangup", "reason": "hangup"}))
        await pc.close()


async def test_candidates_trickled_right_after_the_offer_are_never_lost(
    callbot_relay: CallbotRelay, tone_file
) -> None:
    bot = _tone_bot(callbot_relay, tone_file(".wav", 600.0, seconds=2.0))
    await bot.start()
    ws = await _open(callbot_relay, "alice")
    for attempt in range(20):
        answer, received = await _call(ws, trickle=True)
        assert "a=candidate:" in answer and "c=IN IP4 0.0.0.0" not in answer, attempt
        assert len(received) >= 25, attempt  # the call connected and media flows
        assert abs(analysis.dominant_frequency(received) - 600.0) <= 5, attempt
    await ws.close()
    await bot.stop()


async def test_offer_with_end_of_candidates_and_none_gets_candidates_and_connects(
    callbot_relay: CallbotRelay, tone_file
) -> None:
    bot = _tone_bot(callbot_relay, tone_file(".wav", 600.0, seconds=2.0))
    await bot.start()
    ws = await _open(callbot_relay, "alice")
    answer, received = await _call(ws, trickle=False)
    assert "a=candidate:" in answer and "c=IN IP4 0.0.0.0" not in answer
    # the bot learns the caller's address from its checks (peer-reflexive): media flows
    assert len(received) >= 25
    assert abs(analysis.dominant_frequency(received) - 600.0) <= 5
    await ws.close()
    await bot.stop()
