"""A hostile relay in the middle, for tests: a WebSocket proxy in front of a real relay that
takes over every call the way a malicious signalling server could.

For each `call_offer` it answers the caller with an aiortc endpoint of its own and places its
own offer to the callee with another (its own DTLS certificates on both legs), strips `sig`
from the offer and the answer, drops trickled ICE for those calls and relays the media between
its two legs. Without signatures checked, both parties connect to it and it hears everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from callbot.call import DATA_CHANNEL_ID
from callbot.ice import IceConfig
from callbot.peer import set_local_description


class _Later(MediaStreamTrack):
    """A track for the caller's leg whose frames come from the callee's leg once it answers."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Any:
        return await (await self.source).recv()


class Interception:
    """One call taken over: `caller_leg` faces the caller, `callee_leg` the callee."""

    def __init__(self, ice: IceConfig) -> None:
        self.ice = ice
        self.caller_leg, self.callee_leg = RTCPeerConnection(), RTCPeerConnection()
        self.media = MediaRelay()
        self.connected: list[str] = []  # legs that reached "connected", in order
        self._to_caller: dict[str, _Later] = {}
        for name, pc in (("caller", self.caller_leg), ("callee", self.callee_leg)):
            pc.on("connectionstatechange", self._watch(name, pc))
        self.callee_leg.on("track", self._from_callee)

    def _watch(self, name: str, pc: RTCPeerConnection) -> Any:
        def changed() -> None:
            if pc.connectionState == "connected":
                self.connected.append(name)

        return changed

    def _from_callee(self, track: MediaStreamTrack) -> None:
        later = self._to_caller.get(track.kind)
        if later is not None and not later.source.done():
            later.source.set_result(self.media.subscribe(track))

    async def offer_to_callee(self, caller_offer: str) -> str:
        """Take the caller's offer on our caller leg; our own offer for the callee."""
        heard: list[MediaStreamTrack] = []
        self.caller_leg.on("track", heard.append)
        await self.caller_leg.setRemoteDescription(RTCSessionDescription(caller_offer, "offer"))
        for track in heard:
            self.callee_leg.addTrack(self.media.subscribe(track))
            self._to_caller[track.kind] = later = _Later(track.kind)
            self.caller_leg.addTrack(later)
        if "\nm=application " in caller_offer:
            self.callee_leg.createDataChannel("mitm", negotiated=True, id=DATA_CHANNEL_ID)
        return await set_local_description(self.callee_leg, "offer", self.ice)

    async def answer_caller(self, callee_answer: str) -> str:
        """Take the callee's answer on our callee leg; our own answer for the caller."""
        await self.callee_leg.setRemoteDescription(RTCSessionDescription(callee_answer, "answer"))
        return await set_local_description(self.caller_leg, "answer", self.ice)

    async def close(self) -> None:
        for pc in (self.caller_leg, self.callee_leg):
            await pc.close()


class MitmRelay:
    """`async with MitmRelay(relay.url) as mitm:` clients connect to `mitm.url`; every call
    placed through it is in `mitm.calls` (call id -> `Interception`)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.url = ""
        self.calls: dict[str, Interception] = {}
        self._ice = IceConfig()  # in the tests' namespace: loopback
        self._server: Any = None

    async def __aenter__(self) -> MitmRelay:
        self._server = await serve(self._proxy, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        for interception in self.calls.values():
            await interception.close()

    async def _proxy(self, client: ServerConnection) -> None:
        async with connect(self.upstream) as relay:
            pumps = [
                asyncio.ensure_future(self._pump(client, relay, self._from_client)),
                asyncio.ensure_future(self._pump(relay, client, self._from_relay)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

    async def _pump(self, source: Any, sink: Any, rewrite: Any) -> None:
        async for data in source:
            message = json.loads(data)
            out = await rewrite(message) if isinstance(message, dict) else message
            if out is not None:
                await sink.send(json.dumps(out))

    def _taken(self, message: dict[str, Any]) -> Interception | None:
        return self.calls.get(message.get("call_id"))  # type: ignore[arg-type]

    async def _from_client(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("type") == "call_offer":
            interception = self.calls[message["call_id"]] = Interception(self._ice)
            message.pop("sig", None)
            message["sdp"] = await interception.offer_to_callee(message["sdp"])
        elif message.get("type") == "ice" and self._taken(message):
            return None
        return message

    async def _from_relay(self, message: dict[str, Any]) -> dict[str, Any] | None:
        interception = self._taken(message)
        if interception is not None and message.get("type") == "call_answer":
            message.pop("sig", None)
            message["sdp"] = await interception.answer_caller(message["sdp"])
        elif interception is not None and message.get("type") == "ice":
            return None
        return message
