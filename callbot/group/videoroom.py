"""Group calls on Janus's VideoRoom plugin: an SFU, every participant's media kept apart.

We join as a publisher and send our audio (and video) on one peer connection, sendonly. For
each other publisher we open a subscription: a second handle whose peer connection Janus
offers and we answer, receiving that participant's audio and video separately, so they can
be recorded one by one. Janus announces who enters (`joining`, in rooms created with
`notify_joining`, as ours are), publishers when their media is up (`publishers`), media that
stops (`unpublished`: they are still in the room) and departures (`leaving`, `kicked`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from ..errors import CallbotError, CallError, InvalidStateError
from ..media import jitter
from ..media.incoming import IncomingMedia
from ..peer import prefer_video_codec, set_local_description, wire_outgoing
from ..safe import get_logger
from .janus import JanusError, JanusEvent, JanusHandle
from .room import Participant, Room

logger = get_logger(__name__)

PLUGIN = "janus.plugin.videoroom"
#: Most publishers a room callbot creates accepts (Janus's own default is 3).
MAX_PUBLISHERS = 16
#: The plugin's error code when a publisher is gone (e.g. left while we subscribed).
NO_SUCH_FEED = 428


class VideoRoom(Room):
    """A room on the VideoRoom plugin (see the module docstring)."""

    kind = "videoroom"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handle: JanusHandle | None = None
        self._own_id: Any = None
        self._private_id: Any = None
        self._subscriptions: dict[Any, tuple[JanusHandle, RTCPeerConnection]] = {}

    async def _join(self) -> None:
        handle = self._handle = await self._session.attach(PLUGIN, self._on_event)
        if self._created:
            await handle.request(
                {
                    "request": "create",
                    "room": self.id,
                    "publishers": MAX_PUBLISHERS,
                    "notify_joining": True,  # so those who only watch are known too
                    "audiocodec": "opus",
                    "videocodec": self.config.video_codec,
                }
            )
        joined = await handle.send(
            {"request": "join", "ptype": "publisher", "room": self.id, "display": self.display}
        )
        self._own_id = joined.data.get("id")
        self._private_id = joined.data.get("private_id")
        pc = self._peer_connection()
        pc.addTransceiver(self._audio_out, direction="sendonly")
        if self._video_out is not None:
            video = pc.addTransceiver(self._video_out, direction="sendonly")
            prefer_video_codec(video, self.config.video_codec)
        offer = await set_local_description(pc, "offer", self.config.ice)
        published = await handle.send({"request": "publish"}, {"type": "offer", "sdp": offer})
        if published.jsep is None:
            raise JanusError(None, "Janus answered publish without an SDP answer", "publish")
        await pc.setRemoteDescription(RTCSessionDescription(published.jsep["sdp"], "answer"))
        wire_outgoing(
            pc, published.jsep["sdp"], self._audio_out, self._video_out, self.config.fastpath
        )
        await self._wait_connected(pc, "publishing")
        self._watch(pc)
        self.state = "joined"
        for info in joined.data.get("attendees") or []:
            self._participant_seen(info, announce=False)
        for info in joined.data.get("publishers") or []:
            self._publisher_seen(info, announce=False)

    def _sources(self, participant: Participant | None) -> Mapping[str, IncomingMedia]:
        if participant is None:
            raise InvalidStateError("a VideoRoom keeps participants apart: name one")
        if self._participants.get(participant.id) is not participant or not participant.present:
            raise InvalidStateError(f"{participant} is not in room {self.id}")
        return participant.media

    async def _destroy_room(self) -> None:
        if self._handle is not None:
            await self._handle.request({"request": "destroy", "room": self.id})

    # -- Janus events ----------------------------------------------------------------------------

    def _on_event(self, event: JanusEvent) -> None:
        data = event.data
        if event.janus == "hangup":
            reason = event.message.get("reason", "hung up")
            self._fail(JanusError(None, f"Janus hung up our media: {reason}", "publish"), "failed")
            return
        if data.get("videoroom") == "destroyed":
            self._fail(JanusError(None, f"room {self.id} was destroyed"), "destroyed")
            return
        if isinstance(data.get("joining"), dict):
            self._participant_seen(data["joining"])
        for info in data.get("publishers") or []:
            self._publisher_seen(info)
        stopped = data.get("unpublished")
        if stopped is not None and stopped != "ok" and self._unpublished(stopped):
            self._unsubscribe(stopped)
        for key in ("leaving", "kicked"):
            gone = data.get(key)
            if gone is not None and gone != "ok" and self._remove_participant(gone):
                self._unsubscribe(gone)

    def _participant_seen(
        self, info: dict[str, Any], *, announce: bool = True
    ) -> Participant | None:
        """Someone in the room (published or not): the participant, None if it is us."""
        feed = info.get("id")
        if feed is None or feed == self._own_id:
            return None
        known = self._participants.get(feed)
        if known is not None and known.present:
            return known
        participant = Participant(feed, str(info.get("display", "")))
        participant.media = {"audio": IncomingMedia("audio"), "video": IncomingMedia("video")}
        self._add_participant(participant, announce=announce)
        return participant

    def _publisher_seen(self, info: dict[str, Any], *, announce: bool = True) -> None:
        participant = self._participant_seen(info, announce=announce)
        if participant is None or participant.publishing:
            return
        participant.codecs = {
            stream["type"]: stream["codec"]
            for stream in info.get("streams") or []
            if stream.get("type") in participant.media and "codec" in stream
        }
        if self._published(participant, announce=announce):
            self._spawn(self._subscribe(participant))

    # -- subscriptions ---------------------------------------------------------------------------

    async def _subscribe(self, participant: Participant) -> None:
        """Receive `participant`'s media on a subscription of its own."""
        try:
            handle = await self._session.attach(PLUGIN)
            pc = self._peer_connection()
            self._subscriptions[participant.id] = (handle, pc)
            pc.on(
                "track",
                lambda track: self._on_track(participant, participant.media[track.kind], track),
            )
            attached = await handle.send(
                {
                    "request": "join",
                    "ptype": "subscriber",
                    "room": self.id,
                    "streams": [{"feed": participant.id}],
                    "private_id": self._private_id,
                }
            )
            if attached.jsep is None:
                raise JanusError(None, "Janus sent no SDP offer for the subscription", "join")
            await pc.setRemoteDescription(RTCSessionDescription(attached.jsep["sdp"], "offer"))
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio":
                    jitter.use_for(
                        transceiver.receiver, participant.media["audio"], self.config.fastpath
                    )
            answer = await set_local_description(pc, "answer", self.config.ice)
            await handle.send({"request": "start"}, {"type": "answer", "sdp": answer})
            await self._wait_connected(pc, f"receiving {participant.display}")
        except Exception as exc:
            if isinstance(exc, JanusError) and exc.code == NO_SUCH_FEED:
                logger.debug("room %s: %s left before we could receive them", self.id, participant)
            elif participant.publishing and self.state == "joined":
                error = exc if isinstance(exc, CallbotError) else CallError("failed", repr(exc))
                logger.warning("room %s: no media from %s: %s", self.id, participant, error)
                self.emit("error", error)

    def _unsubscribe(self, feed: Any) -> None:
        """Drop the subscription to `feed` now (they may publish again), close it meanwhile."""
        subscription = self._subscriptions.pop(feed, None)
        if subscription is not None:
            self._spawn(self._close_subscription(*subscription))

    async def _close_subscription(self, handle: JanusHandle, pc: RTCPeerConnection) -> None:
        await handle.detach()
        await pc.close()
