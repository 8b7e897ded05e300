"""`Room`: one bot's presence in a group call on a Janus SFU, and the other `Participant`s.

A room has the media API of a 1:1 `Call` (play files, record, iterate frames, hang up), but
what arrives comes per participant (VideoRoom: one subscription per publisher) or mixed
(AudioBridge: one stream with everybody but us). The plugin specifics live in `videoroom.py`
and `audiobridge.py`; this module holds what both share: the outgoing tracks, the participant
list and its events, the peer connections' lifecycle and the teardown.

Events, for what happens after we joined (who was already there is in `room.participants`
when joining returns): `joined(participant)` when someone enters the room, `published(
participant)` when their media starts and `unpublished(participant)` when it stops (they may
stay, receiving), `left(participant)` when they leave (after `unpublished` if they were still
publishing); `track(participant, kind, track)` when media from a participant arrives
(participant is None for the AudioBridge mix), `ended(reason)`, `error(CallbotError)`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import anyio
from aiortc import RTCPeerConnection

from ..config import CallConfig
from ..errors import CallbotError, CallError, InvalidStateError, MediaError
from ..events import Emitter
from ..media.endpoint import play_audio_file, play_video_file, record
from ..media.incoming import FrameSubscription, IncomingMedia
from ..media.playback import Playback
from ..media.recorder import Recording, TrackRecorder
from ..media.tracks import OutgoingAudioTrack, OutgoingVideoTrack
from ..tasks import TaskHandle, TaskScope
from .janus import JanusError, JanusSession

RoomKind = Literal["videoroom", "audiobridge"]
RoomId = int | str
RoomState = Literal["joining", "joined", "ended"]


class Participant:
    """Someone else in the room. `id` is Janus's id for them; `display` the name they
    joined with (a callbot bot joins with its user id)."""

    def __init__(self, participant_id: RoomId, display: str) -> None:
        self.id = participant_id
        self.display = display
        #: False once the participant has left.
        self.present = True
        #: Whether they send media into the room now (VideoRoom: published; AudioBridge: their
        #: peer connection is up).
        self.publishing = False
        #: What they send, per kind, when the room receives them separately (VideoRoom).
        self.media: dict[str, IncomingMedia] = {}
        #: The codec of each kind they publish, as Janus reports it (VideoRoom), e.g. "vp8".
        self.codecs: dict[str, str] = {}

    def __repr__(self) -> str:
        state = ("" if self.publishing else " not publishing") if self.present else " left"
        return f"<Participant {self.id} {self.display!r}{state}>"


class Room(Emitter):
    """Our side of a group call. Made by `Bot.start_group_call` / `join_group_call` or by
    accepting a `GroupInvite`, never directly."""

    kind: ClassVar[RoomKind]

    def __init__(
        self,
        session: JanusSession,
        room_id: RoomId,
        *,
        display: str,
        config: CallConfig,
        video: bool,
        created: bool,
    ) -> None:
        super().__init__()
        self.id = room_id
        self.display = display
        self.config = config
        self.state: RoomState = "joining"
        self.end_reason: str | None = None
        self._session = session
        self._created = created
        self._audio_out = OutgoingAudioTrack()
        self._video_out = OutgoingVideoTrack(config.video_size) if video else None
        self._participants: dict[RoomId, Participant] = {}
        self._pcs: list[RTCPeerConnection] = []
        self._recorders: list[TrackRecorder] = []
        self._changed = asyncio.Event()
        self._finished: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks = TaskScope(f"room-{room_id}")  # its helpers, cancelled when we leave
        session.on_lost = self._on_session_lost

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} as {self.display!r} {self.state}>"

    @property
    def janus_url(self) -> str:
        """The Janus WebSocket URL the room lives on (what an invite carries)."""
        return self._session.url

    @property
    def has_video(self) -> bool:
        """Whether we send video into the room."""
        return self._video_out is not None

    # -- participants ----------------------------------------------------------------------------

    @property
    def participants(self) -> list[Participant]:
        """The others in the room now, in the order they were seen."""
        return [p for p in self._participants.values() if p.present]

    def participant(self, display: str) -> Participant | None:
        """The participant present under `display` (a bot's user id), if any."""
        return next((p for p in self.participants if p.display == display), None)

    async def wait_for_participants(
        self, *displays: str, timeout: float = 30.0, publishing: bool = True
    ) -> list[Participant]:
        """Wait until someone is present under each of `displays` and, unless `publishing` is
        False, sends media; returns them in order. Raises `TimeoutError` naming who is
        missing, `InvalidStateError` if the room ends."""

        def ready(display: str) -> Participant | None:
            found = self.participant(display)
            return found if found is not None and (found.publishing or not publishing) else None

        async def present() -> list[Participant]:
            while True:
                changed = self._changed
                found = [ready(d) for d in displays]
                if all(found):
                    return found  # type: ignore[return-value]
                if self.state == "ended":
                    raise InvalidStateError(f"room {self.id} ended ({self.end_reason})")
                await changed.wait()

        try:
            with anyio.fail_after(timeout):
                return await present()
        except TimeoutError:
            missing = [d for d in displays if ready(d) is None]
            what = "publishing" if publishing else "present"
            message = f"{missing} not {what} in room {self.id} after {timeout:g} s"
            raise TimeoutError(message) from None

    # -- media -----------------------------------------------------------------------------------

    def send_audio_file(self, path: str | Path, loop: bool = False) -> Playback:
        """Play an audio file into the room (replaces what was playing); like a call's."""
        self._require_live("send_audio_file")
        return play_audio_file(path, self._audio_out, loop=loop, on_error=self._media_error)

    def send_video_file(self, path: str | Path, loop: bool = False) -> Playback:
        """Play a video file (and its soundtrack, if any) into the room, scaled to our size."""
        self._require_live("send_video_file")
        if self._video_out is None:
            raise InvalidStateError(f"we send no video in room {self.id}: join it with video")
        return play_video_file(
            path,
            self._audio_out,
            self._video_out,
            video_size=self.config.video_size,
            loop=loop,
            on_error=self._media_error,
            video_codec=self.config.video_codec,
        )

    def record_incoming(
        self,
        participant: Participant | None = None,
        *,
        audio_path: str | Path | None = None,
        video_path: str | Path | None = None,
    ) -> Recording:
        """Record what arrives, as a call's `record_incoming`: from `participant` in a
        VideoRoom, the mix of everybody else (participant None) in an AudioBridge."""
        self._require_live("record_incoming")
        sources = self._sources(participant)
        for kind, path in (("audio", audio_path), ("video", video_path)):
            if path is not None and kind not in sources:
                raise InvalidStateError(f"no {kind} to record in {self.kind} {self.id}")
        recording = record(
            sources,
            audio_path,
            video_path,
            video_size=self.config.video_size,
            on_error=self._media_error,
        )
        self._recorders.extend(r for r in (recording.audio, recording.video) if r is not None)
        return recording

    def audio_frames(
        self, participant: Participant | None = None, maxsize: int = 250
    ) -> FrameSubscription:
        """Async iterator of `av.AudioFrame`s from `participant` (VideoRoom) or of the mix
        (AudioBridge, participant None), from now until they leave or we do."""
        return self._source(participant, "audio").subscribe(maxsize)

    def video_frames(self, participant: Participant, maxsize: int = 30) -> FrameSubscription:
        """Async iterator of `av.VideoFrame`s from `participant` (VideoRoom)."""
        return self._source(participant, "video").subscribe(maxsize)

    # -- ending ----------------------------------------------------------------------------------

    async def hangup(self) -> None:
        """Leave the room; returns once recordings are finalised. The room itself is
        destroyed when we created it and nobody else is left in it."""
        await self._end("hangup")

    async def wait_ended(self, timeout: float | None = None) -> str | None:
        """The end reason once we are out of the room, or None if `timeout` passed first."""
        with anyio.move_on_after(timeout):
            return await asyncio.shield(self._finished)
        return None

    # -- for the plugin subclasses ---------------------------------------------------------------

    async def _join(self) -> None:
        """Create (if `created`) and join the room on Janus, publish our media."""
        raise NotImplementedError

    def _sources(self, participant: Participant | None) -> Mapping[str, IncomingMedia]:
        """What arrives from `participant` (or the mix, for None), per kind."""
        raise NotImplementedError

    async def _destroy_room(self) -> None:
        """Ask Janus to destroy the room (we created it and leave it empty)."""
        raise NotImplementedError

    def _add_participant(self, participant: Participant, *, announce: bool = True) -> bool:
        """Record someone new (False if already present under that id), emit `joined`."""
        known = self._participants.get(participant.id)
        if known is not None and known.present:
            return False
        self._participants[participant.id] = participant
        self._notify()
        if announce:
            self.emit("joined", participant)
        return True

    def _published(self, participant: Participant, *, announce: bool = True) -> bool:
        """`participant` now sends media: emit `published` (False if it already did)."""
        if participant.publishing or not participant.present:
            return False
        participant.publishing = True
        self._notify()
        if announce:
            self.emit("published", participant)
        return True

    def _unpublished(self, participant_id: Any) -> Participant | None:
        """Their media stopped (they may stay): end what came from them, emit `unpublished`."""
        participant = self._participants.get(participant_id)
        if participant is None or not participant.present or not participant.publishing:
            return None
        participant.publishing = False
        participant.codecs = {}
        for kind, source in list(participant.media.items()):
            self._spawn(source.close())  # ends its recordings and frame iterators
            participant.media[kind] = IncomingMedia(kind)  # for when they publish again
        self._notify()
        self.emit("unpublished", participant)
        return participant

    def _remove_participant(self, participant_id: Any) -> Participant | None:
        """They left the room: `unpublished` first if they still published, then `left`."""
        self._unpublished(participant_id)
        participant = self._participants.get(participant_id)
        if participant is None or not participant.present:
            return None
        participant.present = False
        for source in participant.media.values():
            self._spawn(source.close())
        self._notify()
        self.emit("left", participant)
        return participant

    def _peer_connection(self) -> RTCPeerConnection:
        """A peer connection with the room's ICE settings, closed when we leave."""
        pc = RTCPeerConnection(self.config.ice.rtc_configuration())
        self._pcs.append(pc)
        return pc

    async def _wait_connected(self, pc: RTCPeerConnection, what: str) -> None:
        """Wait for ICE and DTLS to complete on `pc`; raise `CallError` if they fail."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def changed() -> None:
            if pc.connectionState in ("connected", "failed", "closed") and not done.done():
                done.set_result(pc.connectionState)

        pc.on("connectionstatechange", changed)
        changed()
        try:
            with anyio.fail_after(self.config.connect_timeout):
                state = await done
        except TimeoutError:
            state = f"still {pc.connectionState} after {self.config.connect_timeout:g} s"
        finally:
            pc.remove_listener("connectionstatechange", changed)
        if state != "connected":
            raise CallError("failed", f"{what} in room {self.id}: media did not connect ({state})")

    def _watch(self, pc: RTCPeerConnection) -> None:
        """End the room `failed` if our main peer connection fails later on."""

        @pc.on("connectionstatechange")
        def changed() -> None:
            if pc.connectionState == "failed" and self.state == "joined":
                self._spawn(self._end("failed"))

    def _on_track(self, participant: Participant | None, source: IncomingMedia, track: Any) -> None:
        source.attach(track)
        self.emit("track", participant, track.kind, source.subscribe(lazy=True))

    def _fail(self, error: CallbotError, reason: str) -> None:
        """Something ended the room from the outside (Janus, the network)."""
        if self.state == "ended":
            return
        self.emit("error", error)
        self._spawn(self._end(reason))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> TaskHandle:
        """Run `coro` in the room's task group (cancelled when we leave)."""
        return self._tasks.spawn(coro)

    # -- internals -------------------------------------------------------------------------------

    def _source(self, participant: Participant | None, kind: str) -> IncomingMedia:
        self._require_live(f"take {kind} frames")
        source = self._sources(participant).get(kind)
        if source is None:
            raise InvalidStateError(f"no {kind} arrives in {self.kind} {self.id}")
        return source

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _on_session_lost(self, error: JanusError) -> None:
        self._fail(error, "janus_lost")

    def _media_error(self, error: MediaError) -> None:
        self.emit("error", error)

    def _require_live(self, action: str) -> None:
        if self.state == "ended":
            raise InvalidStateError(f"cannot {action}: we left room {self.id}")

    async def _end(self, reason: str) -> None:
        """Leave once: finish recordings, leave Janus (others get `left`), close media."""
        if self.state == "ended":
            await asyncio.shield(self._finished)
            return
        self.state = "ended"
        self.end_reason = reason
        self._notify()
        for track in (self._audio_out, self._video_out):
            if track is not None and track.playback is not None:
                for kind in track.playback.kinds:
                    track.playback.release(kind, "ended")
        await asyncio.gather(*(r.stop() for r in self._recorders), return_exceptions=True)
        if self._created and not self.participants and not self._session.closed:
            with contextlib.suppress(CallbotError):
                await self._destroy_room()
        await self._session.close()
        sources = [s for p in self._participants.values() for s in p.media.values()]
        sources += self._own_sources()
        for source in sources:
            await source.close()
        for pc in self._pcs:
            await pc.close()
        self._tasks.close(now=True)
        self.emit("ended", reason)
        self._finished.set_result(reason)

    def _own_sources(self) -> list[IncomingMedia]:
        """Incoming media that belongs to the room rather than to a participant."""
        return []
