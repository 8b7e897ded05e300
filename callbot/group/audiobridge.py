"""Group calls on Janus's AudioBridge plugin: an audio mixer (MCU).

One peer connection, audio both ways: we send our audio, Janus sends back the mix of every
other participant. So there is one incoming stream for the whole room (record it with
`room.record_incoming(audio_path=...)`), and participants are known from the plugin's
`participants` notifications (each says whether their peer connection is up: `setup`, what
we report as publishing) and `leaving` / `kicked`. Janus removes a participant whose media
ends, so here `unpublished` only ever comes just before `left`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiortc import RTCSessionDescription

from ..errors import InvalidStateError
from ..media import jitter
from ..media.decoder import AUDIO_RATE
from ..media.incoming import IncomingMedia
from ..peer import set_local_description, wire_outgoing
from .janus import JanusError, JanusEvent, JanusHandle
from .room import Participant, Room

PLUGIN = "janus.plugin.audiobridge"


class AudioBridgeRoom(Room):
    """A room on the AudioBridge plugin (see the module docstring). Sends no video."""

    kind = "audiobridge"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "video": False})
        self._handle: JanusHandle | None = None
        self._own_id: Any = None
        self._mix = IncomingMedia("audio")

    async def _join(self) -> None:
        handle = self._handle = await self._session.attach(PLUGIN, self._on_event)
        if self._created:
            await handle.request(
                {"request": "create", "room": self.id, "sampling_rate": AUDIO_RATE}
            )
        pc = self._peer_connection()
        transceiver = pc.addTransceiver(self._audio_out, direction="sendrecv")
        jitter.use_for(transceiver.receiver, self._mix, self.config.fastpath)
        pc.on("track", lambda track: self._on_track(None, self._mix, track))
        offer = await set_local_description(pc, "offer", self.config.ice)
        joined = await handle.send(
            {"request": "join", "room": self.id, "display": self.display},
            {"type": "offer", "sdp": offer},
        )
        if joined.jsep is None:
            raise JanusError(None, "Janus answered join without an SDP answer", "join")
        self._own_id = joined.data.get("id")
        await pc.setRemoteDescription(RTCSessionDescription(joined.jsep["sdp"], "answer"))
        wire_outgoing(pc, joined.jsep["sdp"], self._audio_out, None, self.config.fastpath)
        await self._wait_connected(pc, "joining the mix")
        self._watch(pc)
        self.state = "joined"
        self._participants_seen(joined.data, announce=False)

    def _sources(self, participant: Participant | None) -> Mapping[str, IncomingMedia]:
        if participant is not None:
            raise InvalidStateError("an AudioBridge mixes everybody: take the mix (no participant)")
        return {"audio": self._mix}

    def _own_sources(self) -> list[IncomingMedia]:
        return [self._mix]

    async def _destroy_room(self) -> None:
        if self._handle is not None:
            await self._handle.request({"request": "destroy", "room": self.id})

    def _on_event(self, event: JanusEvent) -> None:
        data = event.data
        if event.janus == "hangup":
            reason = event.message.get("reason", "hung up")
            self._fail(JanusError(None, f"Janus hung up our media: {reason}", "join"), "failed")
            return
        if data.get("audiobridge") == "destroyed":
            self._fail(JanusError(None, f"room {self.id} was destroyed"), "destroyed")
            return
        self._participants_seen(data)
        for key in ("leaving", "kicked"):
            gone = data.get(key)
            if gone is not None and gone != "ok":
                self._remove_participant(gone)

    def _participants_seen(self, data: dict[str, Any], *, announce: bool = True) -> None:
        for info in data.get("participants") or []:
            if info.get("id") is None or info["id"] == self._own_id:
                continue
            participant = Participant(info["id"], str(info.get("display", "")))
            self._add_participant(participant, announce=announce)
            if info.get("setup"):
                self._published(self._participants[info["id"]], announce=announce)
