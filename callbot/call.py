"""`Call`: one audio/video call. State machine, events and controls over one RTCPeerConnection.

A call does not know how its signalling travels: it sends protocol messages (docs/protocol.md)
through a `CallSignaling` port and is fed the peer's messages through `handle_signal()`. The
relay client, and an in-process link for tests and the demo, both plug in there.

States: new -> calling (outbound) | ringing (inbound) -> connecting -> connected <-> held -> ended;
SIP calls (callbot/sip) may be `early` (media before the answer) between ringing/calling and
connecting.
Events: state(new, prev), ringing, connected, track(kind, track), mediastatus(audio_muted,
video_muted), held(by), resumed, dtmf(digit), data(payload), transfer(target, replaces),
transferred(new_call), ended(reason, duration), error(CallbotError).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, get_args

import anyio
import av
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.sdp import SessionDescription, candidate_from_sdp

from . import _compat
from .config import CallConfig
from .errors import CallbotError, CallError, InvalidStateError, MediaError
from .events import Emitter
from .identity import IdentityError, KnownPeers
from .media import dtmf, jitter
from .media.clock import AUDIO_TICKER
from .media.decoder import AUDIO_FRAME_SAMPLES, AudioFramer
from .media.endpoint import play_audio_file, play_video_file, record
from .media.incoming import FrameSubscription, IncomingMedia
from .media.live import TrackSource
from .media.playback import Playback
from .media.recorder import Recording, TrackRecorder
from .media.tones import dtmf_samples
from .media.tracks import MediaSource, OutgoingAudioTrack, OutgoingVideoTrack
from .peer import prefer_video_codec, release, set_local_description, wire_outgoing
from .safe import get_logger, printable
from .signaling.messages import CallMessage, DeliveredAnswer, DeliveredIce, PeerMessage
from .tasks import TaskHandle, TaskScope
from .voice import dialog
from .voice.listener import END_SILENCE, SpeechListener, VoiceActivity
from .voice.tts import SPEECH

logger = get_logger(__name__)

T = TypeVar("T")

CallState = Literal[
    "new", "calling", "ringing", "early", "connecting", "connected", "held", "ended"
]
Direction = Literal["inbound", "outbound"]
Kind = Literal["audio", "video"]
#: Why an inbound call is refused (`Call.reject`, `Incoming.decline`): the caller's end reason
#: becomes `rejected:<reason>`.
RejectReason = Literal["busy", "decline"]

#: Messages queued by `send_data()` before the data channel opens.
MAX_QUEUED_DATA = 1000
#: Trickled ICE candidates kept until both descriptions are set.
MAX_EARLY_CANDIDATES = 100
#: An end-of-candidates line of a remote description (RFC 8840 section 5.2).
_END_OF_CANDIDATES = re.compile(r"^a=end-of-candidates\r?\n", re.M)
#: How long a completed attended transfer waits for the target to take the new call over.
TRANSFER_TIMEOUT = 30.0

#: Events an ended call may still emit (the Bot follows a transfer after the end); its other
#: listeners are dropped at the end, since closures over the call would keep it in a cycle.
EVENTS_AFTER_END = ("transferred", "error")

#: Places a call for a transfer: (peer, video, metadata) -> the new Call (the Bot provides it).
PlaceCall = Callable[[str, bool, dict[str, Any]], Awaitable["Call"]]
DATA_CHANNEL_LABEL = "callbot"
DATA_CHANNEL_ID = 0  # pre-negotiated on both sides: no in-band channel announcement needed


def _hold_end_of_candidates(sdp: str) -> tuple[str, bool]:
    """`sdp` without its end-of-candidates lines, and whether it had any.

    aioice prunes, at end-of-candidates, the ICE components the peer gave no candidate for:
    applied before we gather (as aiortc does for an offer carrying it), that leaves us with
    nothing to gather and an answer without candidates. So it is applied after our gathering.
    """
    held, count = _END_OF_CANDIDATES.subn("", sdp)
    return held, count > 0


def _negotiated_codecs(answer_sdp: str) -> dict[str, str]:
    """kind -> the codec an answer settled on, e.g. {"audio": "opus/48000/2"}."""
    out = {}
    for media in SessionDescription.parse(answer_sdp).media:
        codec = next(
            (c for c in media.rtp.codecs if c.mimeType.lower() != dtmf.TELEPHONE_EVENT), None
        )
        if codec is not None and media.kind in ("audio", "video"):
            name = f"{codec.mimeType.split('/', 1)[1]}/{codec.clockRate}"
            out[media.kind] = name + (f"/{codec.channels}" if codec.channels else "")
    return out


def check_reject_reason(reason: object) -> None:
    """Raise ValueError unless `reason` is one of the `RejectReason` values."""
    allowed = get_args(RejectReason)
    if reason not in allowed:
        names = ", ".join(repr(name) for name in allowed)
        raise ValueError(f"reject reason must be one of {names}, not {reason!r}")


class CallSignaling(Protocol):
    """Carries one call's protocol messages to the peer (relay client, in-process link...)."""

    async def send(self, message: CallMessage) -> None: ...


class Call(Emitter):
    """One call with one peer. Create through `Bot` (or `callbot.signaling.direct` in tests)."""

    def __init__(
        self,
        *,
        direction: Direction,
        peer: str,
        signaling: CallSignaling,
        config: CallConfig | None = None,
        call_id: str | None = None,
        video: bool = False,
        metadata: dict[str, Any] | None = None,
        remote_offer: str | None = None,
        remote_signature: Any = None,
        place_call: PlaceCall | None = None,
        local_user: str = "",
    ) -> None:
        super().__init__()
        _compat.ensure_patched()
        self.id = call_id or uuid.uuid4().hex
        self.direction: Direction = direction
        self.peer = peer
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.config = config or CallConfig()
        self.state: CallState = "new"
        self.prev_state: CallState | None = None
        self.end_reason: str | None = None
        #: The reason the peer gave when it hung up (e.g. "error", "no_answer"), if it did.
        self.remote_end_reason: str | None = None
        #: The relay's grant for the attended transfer the peer asked for (see Bot).
        self.transfer_grant: str | None = None
        self.remote_muted = {"audio": False, "video": False}
        self.remote_deafened = False
        self._deafened = False
        self._held_by: set[str] = set()
        #: Every DTMF key received so far, in order.
        self.received_dtmf = ""
        self._dtmf_queue: asyncio.Queue[str] = asyncio.Queue()
        self._rfc4733: dtmf.Rfc4733Sender | None = None
        self._key_presses = dtmf.KeyPresses(self._on_dtmf)
        self._tone_listener: dtmf.InbandDtmfListener | None = None
        self._speech: SpeechListener | None = None  # see `listen` (callbot/voice)
        self.on("new_listener", self._listener_added)
        self._signaling = signaling
        self._place_call = place_call
        self.local_user = local_user
        self._remote_signature = remote_signature
        #: Whether the peer's offer or answer carried a signature verified against a pinned key.
        self.peer_verified = False
        self._consultation: Call | None = None
        self._remote_offer = remote_offer
        self._pc: RTCPeerConnection | None = None
        self._audio_out = OutgoingAudioTrack()
        self._video_out = (
            OutgoingVideoTrack(self.config.video_size)
            if video and direction == "outbound"
            else None
        )
        self._incoming = {"audio": IncomingMedia("audio"), "video": IncomingMedia("video")}
        self._channel: RTCDataChannel | None = None
        self._outbox: deque[str | bytes] = deque()
        self._early_candidates: list[dict[str, Any] | None] = []  # `ice.candidate`s
        self._candidates_ready = False  # both descriptions set: remote candidates go straight in
        self._remote_candidates = 0  # how many the peer gave (SDP and trickled)
        self._recorders: list[TrackRecorder] = []
        self._timer: asyncio.TimerHandle | None = None
        self._connected_at: float | None = None
        self._ended_at: float | None = None
        self._failure: CallbotError | None = None
        self._codecs: dict[str, str] = {}  # kind -> negotiated codec, e.g. "opus/48000/2"
        self._final_stats: dict[str, Any] | None = None
        loop = asyncio.get_running_loop()
        self._connected: asyncio.Future[None] = loop.create_future()
        self._finished: asyncio.Future[str] = loop.create_future()
        #: Every task spawned for the call (handlers, watchers, its end): none outlives it.
        self._tasks = TaskScope(f"call-{self.id}", owner=self.id)
        if direction == "inbound":
            self._set_state("ringing")

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.direction} {self.peer} {self.state}>"

    # -- properties --------------------------------------------------------------------------

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        """The underlying aiortc peer connection (None before the call starts)."""
        return self._pc

    @property
    def duration(self) -> float:
        """Seconds since the call connected (0 if it never did); frozen once ended."""
        if self._connected_at is None:
            return 0.0
        return (self._ended_at or time.monotonic()) - self._connected_at

    @property
    def is_muted(self) -> bool:
        """Whether our microphone (audio) is muted."""
        return self._audio_out.muted

    @property
    def is_video_muted(self) -> bool:
        return self._video_out is not None and self._video_out.muted

    @property
    def is_held(self) -> bool:
        return self.state == "held"

    @property
    def held_by(self) -> frozenset[str]:
        """Who holds the call: {"local"}, {"remote"}, both, or nobody."""
        return frozenset(self._held_by)

    @property
    def has_video(self) -> bool:
        """Whether this call sends video."""
        return self._video_out is not None

    @property
    def receives_video(self) -> bool:
        """Whether the negotiated call carries video from the peer to us."""
        if self._pc is None:
            return False
        return any(
            t.kind == "video" and t.currentDirection in ("sendrecv", "recvonly")
            for t in self._pc.getTransceivers()
        )

    @property
    def remote_offers_video(self) -> bool:
        """For an inbound call: whether the caller's offer includes video."""
        return bool(self._remote_offer and "\nm=video " in "\n" + self._remote_offer)

    # -- setting up --------------------------------------------------------------------------

    async def start(self) -> None:
        """Outbound: send the offer; the call is `calling` until answered."""
        self._require("new", "start")
        pc = self._create_peer_connection()
        audio = pc.addTransceiver(self._audio_out, direction="sendrecv")
        if self.config.dtmf == "inband":
            dtmf.refuse_telephone_event(audio)
        if self._video_out is not None:
            self._prefer_codec(pc.addTransceiver(self._video_out, direction="sendrecv"))
        self._open_channel(pc)
        await self._guard(self._describe(pc, "offer"))
        self._set_state("calling")
        self._arm_timer(self.config.ring_timeout, "no_answer")
        sdp = pc.localDescription.sdp
        await self._send(
            {
                "type": "call_offer",
                "call_id": self.id,
                "to": self.peer,
                "sdp": sdp,
                "metadata": self.metadata,
                "sig": self._sign(self.local_user, self.peer, sdp),
            }
        )

    async def answer(self, video: bool = False) -> None:
        """Inbound: accept the ringing call, sending video too when `video` is true."""
        self._require("ringing", "answer")
        assert self._remote_offer is not None
        pc = self._create_peer_connection()
        await self._guard(self._set_remote_description(pc, self._remote_offer, "offer"))
        pc.addTrack(self._audio_out)
        if video and self.remote_offers_video:
            self._video_out = OutgoingVideoTrack(self.config.video_size)
            pc.addTrack(self._video_out)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                self._prefer_codec(transceiver)
            elif transceiver.kind == "audio" and self.config.dtmf == "inband":
                dtmf.refuse_telephone_event(transceiver)
        if "\nm=application " in "\n" + self._remote_offer:
            self._open_channel(pc)
        self._set_state("connecting")
        self._arm_timer(self.config.connect_timeout, "failed")
        await self._guard(self._describe(pc, "answer"))
        await self._apply_early_candidates()
        sdp = pc.localDescription.sdp
        self._setup_receive(sdp)
        await self._send(
            {
                "type": "call_answer",
                "call_id": self.id,
                "sdp": sdp,
                "sig": self._sign(self.peer, self.local_user, sdp),
            }
        )

    def verify_offer(self) -> None:
        """Inbound: check the caller's signature (raises `IdentityError` when it must refuse)."""
        assert self._remote_offer is not None
        self.peer_verified = self._check(self._remote_signature, self.peer, self.local_user,
                                         self._remote_offer)  # fmt: skip

    async def refuse(self, error: CallbotError) -> None:
        """End the call at once because of `error` (e.g. a bad signature), telling the peer."""
        code = getattr(error, "code", "refused")
        self._failure = self._failure or error
        self.emit("error", error)
        await self._end("failed", notify=code)

    async def reject(self, reason: RejectReason = "decline") -> None:
        """Inbound: refuse the ringing call; raises ValueError for a reason not in RejectReason."""
        check_reject_reason(reason)
        self._require("ringing", "reject")
        with contextlib.suppress(CallbotError, OSError):
            await self._send({"type": "call_reject", "call_id": self.id, "reason": reason})
        await self._end(f"rejected:{reason}")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until media can flow; raises `CallError` if the call ends first."""
        with anyio.fail_after(timeout):
            await asyncio.shield(self._connected)

    async def wait_ended(self, timeout: float | None = None) -> str | None:
        """Wait for the end of the call: its end reason, or None if `timeout` passed first."""
        with anyio.move_on_after(timeout):
            return await asyncio.shield(self._finished)
        return None

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call and tell the peer; returns once recordings are finalised."""
        if self.state == "ended":
            await asyncio.shield(self._finished)
            return
        await self._end(reason, notify=reason)

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work (`time.sleep`, a synchronous HTTP or database client, heavy
        computation) in a thread of the loop's default executor and await its result: the
        event loop, which carries every call's media, is never held (see callbot/watchdog.py)."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- media -------------------------------------------------------------------------------

    def send_audio_file(self, path: str | Path, loop: bool = False) -> Playback:
        """Play an audio file (any format PyAV reads) into the call; replaces current audio.

        Raises `MediaError` before anything is sent if the file is missing, empty, corrupt or
        has no audio.
        """
        self._require_live("send_audio_file")
        return play_audio_file(path, self._audio_out, loop=loop, on_error=self._media_error)

    def send_video_file(self, path: str | Path, loop: bool = False) -> Playback:
        """Play a video file (and its audio track, if any) into the call, scaled to its size."""
        self._require_live("send_video_file")
        if self._video_out is None:
            raise InvalidStateError(
                "this call sends no video: place or accept it with video=True", self.id
            )
        codec = self._codecs.get("video", self.config.video_codec).split("/")[0].lower()
        return play_video_file(
            path,
            self._audio_out,
            self._video_out,
            video_size=self.config.video_size,
            loop=loop,
            on_error=self._media_error,
            video_codec=codec,
        )

    def record_incoming(
        self, audio_path: str | Path | None = None, video_path: str | Path | None = None
    ) -> Recording:
        """Record what the peer sends, written as it arrives; format from each suffix.

        Raises `MediaError` at once for an unwritable path or an unsupported suffix.
        """
        self._require_live("record_incoming")
        recording = record(
            self._incoming,
            audio_path,
            video_path,
            video_size=self.config.video_size,
            on_error=self._media_error,
        )
        self._recorders.extend(r for r in (recording.audio, recording.video) if r is not None)
        return recording

    def remote_track(self, kind: Kind = "audio") -> FrameSubscription:
        """The peer's `kind` media as a `MediaStreamTrack`, e.g. to play back into a call."""
        return self._incoming[kind].subscribe(maxsize=10, lazy=True)

    async def set_audio_source(self, source: str | Path | MediaStreamTrack) -> MediaSource:
        """Switch what the call sends as audio: a file (like `send_audio_file`) or a live
        track (e.g. `call.remote_track("audio")` for an echo), without renegotiation."""
        if isinstance(source, MediaStreamTrack):
            self._require_live("set_audio_source")
            live = TrackSource(source)
            self._audio_out.play(live)
            return live
        return self.send_audio_file(source)

    async def set_video_source(self, source: str | Path | MediaStreamTrack) -> MediaSource:
        """Switch what the call sends as video: a file or a live track (scaled to our size)."""
        if isinstance(source, MediaStreamTrack):
            self._require_live("set_video_source")
            if self._video_out is None:
                raise InvalidStateError("this call sends no video", self.id)
            live = TrackSource(source, self.config.video_size)
            self._video_out.play(live)
            return live
        return self.send_video_file(source)

    def audio_frames(self, maxsize: int = 250) -> FrameSubscription:
        """Async iterator of the peer's audio as `av.AudioFrame`s, from now until the end."""
        return self._incoming["audio"].subscribe(maxsize)

    def video_frames(self, maxsize: int = 30) -> FrameSubscription:
        """Async iterator of the peer's video as `av.VideoFrame`s, from now until the end."""
        return self._incoming["video"].subscribe(maxsize)

    async def mute(self, kind: Kind = "audio") -> None:
        """Send silence (audio) or black frames (video); the peer gets `mediastatus`."""
        await self._set_muted(kind, True)

    async def unmute(self, kind: Kind = "audio") -> None:
        await self._set_muted(kind, False)

    async def deafen(self) -> None:
        """Stop taking in what the peer sends: recordings and frame iterators get silence
        (audio) and no video. The peer gets `mediastatus` with `deafened`."""
        self._require_live("deafen")
        self._deafened = True
        self._update_incoming()
        await self._send_mediastatus()

    async def undeafen(self) -> None:
        self._require_live("undeafen")
        self._deafened = False
        self._update_incoming()
        await self._send_mediastatus()

    @property
    def is_deafened(self) -> bool:
        return self._deafened

    @property
    def dtmf_mode(self) -> str | None:
        """ "rfc4733" when both ends negotiated telephone-events, "inband" otherwise (None
        before the call is negotiated)."""
        if self._pc is None or self._pc.remoteDescription is None:
            return None
        return "rfc4733" if self._rfc4733 is not None else "inband"

    async def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 70) -> None:
        """Send DTMF keys (0-9 * # A-D), each `duration_ms` long then `gap_ms` apart: as RFC 4733
        telephone-events when negotiated, else as in-band tones. Returns once they are sent (or
        the call ended meanwhile: an IVR may hang up on the key it just got)."""
        self._require_in_call("send DTMF")
        keys = dtmf.check_digits(digits)
        if not 40 <= duration_ms <= 2000 or not 40 <= gap_ms <= 2000:
            raise ValueError("duration_ms and gap_ms must be between 40 and 2000")
        if self._rfc4733 is not None:
            await self._rfc4733.send(keys, duration_ms, gap_ms)
            return
        framer = AudioFramer()
        samples = dtmf_samples(keys, 48000, duration_ms / 1000, gap_ms / 1000)
        block = av.AudioFrame.from_ndarray(
            (samples * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        block.sample_rate = 48000
        frames = framer.push(block) + framer.pad(AUDIO_FRAME_SAMPLES - framer.pending)
        await self._audio_out.insert(frames)

    async def read_dtmf(self, timeout: float | None = None) -> str | None:
        """The next DTMF key received (in order), or None if none came within `timeout`."""
        self._listen_for_tones()
        with anyio.move_on_after(timeout):
            return await self._dtmf_queue.get()
        return None

    # -- speech (callbot/voice; `pip install 'callbot[voice]'`, see docs/howto/voice.md) ----

    async def say(self, text: str, voice: str | None = None) -> Playback:
        """Speak `text` into the call, synthesised offline by `voice` ("piper", "espeak:en-us",
        ...; default: piper with `callbot[tts]`, else espeak-ng), once per text and voice for
        the whole process; replaces current audio like `send_audio_file`."""
        self._require_live("say")
        return self.send_audio_file(await SPEECH.path(text, voice))

    async def listen(
        self,
        timeout: float = 5.0,
        max_seconds: float = 15.0,
        end_silence: float = END_SILENCE,
        grammar: list[str] | None = None,
        save_to: str | Path | None = None,
    ) -> dialog.Utterance | None:
        """The next thing the caller says, transcribed offline (restricted to one of the
        `grammar` options if given), or None if no speech starts within `timeout` s. It ends
        after `end_silence` s of silence or at `max_seconds`; `save_to` keeps it as a WAV."""
        return await dialog.listen(self._speech_listener(), timeout=timeout,
                                   max_seconds=max_seconds, end_silence=end_silence,
                                   grammar=grammar, save_to=save_to)  # fmt: skip

    async def ask(
        self,
        prompt: str | Path,
        grammar: list[str] | None = None,
        digits: int = 0,
        timeout: float = 5.0,
        max_seconds: float = 10.0,
        voice: str | None = None,
    ) -> dialog.Answer:
        """Say `prompt` (text, or an audio file) and return what the caller answers: one of
        the `grammar` options, or up to `digits` keys. Speech or a key stops the prompt at
        once (barge-in); `timeout` counts from the end of the prompt."""

        async def start() -> Playback:
            if isinstance(prompt, Path):
                return self.send_audio_file(prompt)
            return await self.say(prompt, voice)

        return await dialog.ask(self._speech_listener(), start, self.read_dtmf, grammar=grammar,
                                digits=digits, timeout=timeout, max_seconds=max_seconds,
                                end_silence=END_SILENCE)  # fmt: skip

    def voice_activity(self) -> AsyncIterator[VoiceActivity]:
        """Async iterator of `VoiceActivity(speaking, at)`: the caller started or stopped
        speaking (voice activity detection), from now until the call ends."""
        return self._speech_listener().activity()

    def _speech_listener(self) -> SpeechListener:
        """The call's voice activity detector on received audio, made on first use and kept."""
        if self._speech is None:
            self._speech = SpeechListener()
            self._incoming["audio"].add_sink(self._speech)
        return self._speech

    async def transfer(self, target: str) -> None:
        """Blind transfer: ask the peer to call `target`; this call ends `transferred`."""
        self._require_in_call("transfer")
        await self._send({"type": "transfer", "call_id": self.id, "target": target})
        await self._end("transferred", notify="transferred")

    async def attended_transfer(self, target: str) -> Call:
        """Start an attended transfer: place a consultation call to `target` (this call stays
        up; put it on hold if the peer should not hear). Finish with `complete_transfer()`."""
        self._require_in_call("transfer")
        if self._place_call is None:
            raise InvalidStateError("attended transfer needs a call placed through a Bot", self.id)
        self._consultation = await self._place_call(
            target, self.has_video, {"consultation_for": self.id}
        )
        return self._consultation

    async def complete_transfer(self) -> None:
        """Connect the peer with the consultation's party, who takes the new call in place of
        the consultation; this call and the consultation end `transferred`."""
        consultation = self._consultation
        if consultation is None or consultation.state not in ("connected", "held"):
            raise InvalidStateError("no connected consultation call to transfer to", self.id)
        self._require_in_call("transfer")
        await self._send(
            {
                "type": "transfer",
                "call_id": self.id,
                "target": consultation.peer,
                "replaces": consultation.id,
            }
        )
        await self._end("transferred", notify="transferred")
        # the target hangs the consultation up ("transferred") once the new call replaces it;
        # shielded: this call has ended, and its grace period may be shorter than the wait
        with anyio.CancelScope(shield=True):
            if await consultation.wait_ended(TRANSFER_TIMEOUT) is None:
                await consultation.hangup("transferred")

    async def hold(self) -> None:
        """Put the call on hold: no media energy goes either way until `resume()`. The peer
        gets `held("remote")`; we emit `held("local")`."""
        self._require_in_call("hold")
        if "local" not in self._held_by:
            await self._send({"type": "hold", "call_id": self.id})
            self._set_held("local", True)

    async def resume(self) -> None:
        """Take the call off our hold (a hold by the peer stays until the peer resumes)."""
        self._require_in_call("resume")
        if "local" in self._held_by:
            await self._send({"type": "resume", "call_id": self.id})
            self._set_held("local", False)

    def send_data(self, payload: str | bytes) -> None:
        """Send a message over the call's data channel (queued until the channel opens)."""
        self._require_live("send_data")
        if self._channel is not None and self._channel.readyState == "open":
            self._channel.send(payload)
        elif len(self._outbox) < MAX_QUEUED_DATA:
            self._outbox.append(payload)
        else:
            raise CallError("data_queue_full", "data channel not open and queue full", self.id)

    async def stats(self) -> dict[str, Any]:
        """Per direction and kind: codec, packets, bytes (sent), loss, jitter (s), RTT (s),
        audio slots dropped because the process fell behind; totals of the transport (packets
        and bytes each way); the process's media clock lag (s: last, p99 of the last 10 s); and
        `peer_verified` (the peer's signature checked on its pinned key). Kept after the end."""
        if self._final_stats is not None:
            return self._final_stats
        result: dict[str, Any] = {"duration": self.duration, "peer_verified": self.peer_verified,
                                  "sent": {}, "received": {},
                                  "transport": {}, "process": {
                                      "loop_lag": AUDIO_TICKER.lag,
                                      "loop_lag_p99": AUDIO_TICKER.lag_percentile(99),
                                  }}  # fmt: skip
        if self._pc is None:
            return result
        report = await self._pc.getStats()
        for stat in report.values():
            kind: str = getattr(stat, "kind", "")  # every RTP stream's stats have one
            if stat.type == "transport":
                result["transport"] = {
                    "packets_sent": stat.packetsSent, "packets_received": stat.packetsReceived,
                    "bytes_sent": stat.bytesSent, "bytes_received": stat.bytesReceived,
                }  # fmt: skip
            elif stat.type == "outbound-rtp":
                result["sent"].setdefault(kind, {}).update(
                    codec=self._codecs.get(kind), packets=stat.packetsSent, bytes=stat.bytesSent
                )
                if kind == "audio":
                    result["sent"]["audio"]["dropped"] = self._audio_out.dropped
            elif stat.type == "remote-inbound-rtp":
                result["sent"].setdefault(kind, {}).update(
                    rtt=stat.roundTripTime, packets_lost=stat.packetsLost
                )
            elif stat.type == "inbound-rtp":
                clock = 48000 if kind == "audio" else 90000
                result["received"][kind] = {
                    "codec": self._codecs.get(kind),
                    "packets": stat.packetsReceived,
                    "packets_lost": stat.packetsLost,
                    "jitter": stat.jitter / clock,
                    "frames": self._incoming[kind].frames,
                }
        return result

    # -- signalling in -----------------------------------------------------------------------

    async def handle_signal(self, message: PeerMessage) -> None:
        """Apply one protocol message from the peer (called by the signalling layer)."""
        if self.state == "ended":
            return
        kind = message.get("type")
        if kind == "call_ringing":
            if self.state == "calling":
                self.emit("ringing")
        elif message["type"] == "call_answer":
            await self._on_answer(message)
        elif message["type"] == "call_reject":
            refusal = (
                message.get("reason")
                if message.get("reason") in ("busy", "decline")
                else ("decline")
            )
            await self._end(f"rejected:{refusal}")
        elif message["type"] == "ice":
            await self._on_remote_candidate(message)
        elif message["type"] == "hangup":
            reason = message.get("reason")
            self.remote_end_reason = printable(reason, 64) if isinstance(reason, str) else None
            await self._end(reason if reason in ("transferred", "revoked") else "remote_hangup")
        elif message["type"] == "transfer" and self.state in ("connected", "held"):
            grant = message.get("grant")
            self.transfer_grant = grant if isinstance(grant, str) else None
            self.emit("transfer", str(message["target"]), message.get("replaces"))
        elif message["type"] == "mediastatus":
            self.remote_muted = {
                "audio": bool(message.get("audio_muted")),
                "video": bool(message.get("video_muted")),
            }
            self.remote_deafened = bool(message.get("deafened"))
            self.emit("mediastatus", self.remote_muted["audio"], self.remote_muted["video"])
        elif kind in ("hold", "resume") and self.state in ("connected", "held"):
            self._set_held("remote", kind == "hold")
        else:
            logger.debug("call %s: ignoring signal %r", self.id, kind)

    async def fail(self, error: CallbotError, reason: str = "failed") -> None:
        """End the call because signalling failed (peer offline, relay error...). Once the
        call has ended nothing is left to fail: an error that arrives then (the relay's
        `call_not_found` for a hangup that crossed the peer's) is no `error` event."""
        if self.state == "ended":
            logger.debug("call %s: %s after the end, ignored", self.id, error)
            return
        self._failure = self._failure or error
        self.emit("error", error)
        await self._end(reason)

    # -- internals ---------------------------------------------------------------------------

    def _sign(self, caller: str, callee: str, sdp: str) -> dict[str, str] | None:
        key = self.config.trust.key
        return key.sign(self.id, caller, callee, sdp) if key is not None else None

    def _check(self, signature: Any, caller: str, callee: str, sdp: str) -> bool:
        trust = self.config.trust
        peers = trust.peers or KnownPeers()
        return peers.check(self.peer, signature, self.id, caller, callee, sdp,
                           trust.require_signatures)  # fmt: skip

    def _create_peer_connection(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(self.config.ice.rtc_configuration())
        self._pc = pc
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        return pc

    def _prefer_codec(self, transceiver: Any) -> None:
        prefer_video_codec(transceiver, self.config.video_codec)

    def _open_channel(self, pc: RTCPeerConnection) -> None:
        channel = pc.createDataChannel(DATA_CHANNEL_LABEL, negotiated=True, id=DATA_CHANNEL_ID)
        self._channel = channel

        @channel.on("open")
        def flush() -> None:
            while self._outbox and channel.readyState == "open":
                channel.send(self._outbox.popleft())

        @channel.on("message")
        def receive(payload: str | bytes) -> None:
            self.emit("data", payload)

    async def _describe(self, pc: RTCPeerConnection, kind: Literal["offer", "answer"]) -> None:
        await set_local_description(pc, kind, self.config.ice)

    async def _guard(self, step: Any) -> Any:
        """Run a negotiation step; a failure ends the call `failed` (telling the peer, once it
        knows of the call) and is re-raised typed."""
        try:
            return await step
        except CallbotError as exc:
            await self._give_up(exc)
            raise
        except Exception as exc:
            error = CallError("negotiation_failed", f"{type(exc).__name__}: {exc}", self.id)
            await self._give_up(error)
            raise error from exc

    async def _give_up(self, error: CallbotError) -> None:
        if self.state == "new":  # no offer went out: nobody to tell
            await self.fail(error)
        else:
            await self.refuse(error)

    async def _on_answer(self, message: DeliveredAnswer) -> None:
        if self.state != "calling" or self._pc is None:
            logger.debug("call %s: answer in state %s ignored", self.id, self.state)
            return
        self._cancel_timer()
        sdp = str(message.get("sdp", ""))
        try:
            self.peer_verified = self._check(message.get("sig"), self.local_user, self.peer, sdp)
        except IdentityError as exc:
            await self.refuse(exc)
            return
        self._set_state("connecting")
        self._arm_timer(self.config.connect_timeout, "failed")
        with contextlib.suppress(CallbotError):
            await self._guard(self._set_remote_description(self._pc, sdp, "answer"))
            await self._apply_early_candidates()
            self._setup_receive(self._pc.remoteDescription.sdp)

    async def _set_remote_description(
        self, pc: RTCPeerConnection, sdp: str, kind: Literal["offer", "answer"]
    ) -> None:
        """Apply the peer's description, its end-of-candidates held back until ours is set."""
        held, ended = _hold_end_of_candidates(sdp)
        self._remote_candidates += held.count("\na=candidate:")
        await pc.setRemoteDescription(RTCSessionDescription(held, kind))
        if ended:
            self._early_candidates.append(None)

    async def _on_remote_candidate(self, message: DeliveredIce) -> None:
        candidate = message.get("candidate")
        if not self._candidates_ready:
            if len(self._early_candidates) < MAX_EARLY_CANDIDATES:
                self._early_candidates.append(candidate)  # applied once both descriptions are set
            return
        await self._add_remote_candidate(candidate)

    async def _add_remote_candidate(self, init: dict[str, Any] | None) -> None:
        """Apply an `ice.candidate` (an RTCIceCandidateInit; None: end of candidates)."""
        assert self._pc is not None
        payload = init or {}
        text = payload.get("candidate", "") if isinstance(payload, dict) else ""
        try:
            if not text:
                if self._remote_candidates:
                    await self._pc.addIceCandidate(None)  # end of candidates
                # else ignored: a peer that gave no candidate can still reach us with its
                # checks (peer-reflexive, RFC 8445 section 7.3.1.3), which aioice would refuse
                return
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
            candidate.sdpMid = payload.get("sdpMid")
            candidate.sdpMLineIndex = payload.get("sdpMLineIndex")
            await self._pc.addIceCandidate(candidate)
            self._remote_candidates += 1
        except Exception as exc:  # a bad candidate is the peer's problem, not a reason to end
            logger.info("call %s: ignoring bad ICE candidate %r: %s", self.id, text, exc)

    async def _apply_early_candidates(self) -> None:
        """Once both descriptions are set (ours with its candidates gathered): apply the
        candidates kept so far in order, those arriving meanwhile too, then take them live."""
        while self._early_candidates:
            await self._add_remote_candidate(self._early_candidates.pop(0))
        self._candidates_ready = True

    def _setup_receive(self, answer_sdp: str) -> None:
        """Once the answer is known: our audio jitter buffer, and DTMF (RFC 4733 both ways if
        negotiated, else listening for in-band tones)."""
        assert self._pc is not None
        self._codecs = _negotiated_codecs(answer_sdp)
        wire_outgoing(self._pc, answer_sdp, self._audio_out, self._video_out, self.config.fastpath)
        self._tap_video()
        settled = dtmf.negotiated(answer_sdp)
        audio = next((t for t in self._pc.getTransceivers() if t.kind == "audio"), None)
        if settled is None or audio is None:
            return
        if self._codecs.get("audio", "").lower().startswith("opus"):
            jitter.use_for(audio.receiver, self._incoming["audio"], self.config.fastpath)
        if settled.event_payload_types:
            events = set(settled.event_payload_types)
            dtmf.hook_receiver(audio.receiver, events, self._key_presses.event)
        if settled.event_payload_type is None:
            self._listen_for_tones()
            return
        self._rfc4733 = dtmf.Rfc4733Sender(
            _compat.rtp.sender_ssrc(audio.sender),
            settled.audio_payload_type,
            settled.event_payload_type,
            settled.clock_rate,
        )
        dtmf.hook_sender(audio.sender.transport, self._rfc4733)

    def _tap_video(self) -> None:
        """Received VP8 is offered undecoded too, for recordings that store it as is."""
        assert self._pc is not None
        video = next((t for t in self._pc.getTransceivers() if t.kind == "video"), None)
        hub = self._incoming["video"]
        if video is None or not self._codecs.get("video", "").lower().startswith("vp8/"):
            return
        hub.keyframe_request = _compat.videotap.tap_encoded_video(video.receiver, hub.encoded_video)
        if hub.keyframe_request is not None:
            hub.encoding = "vp8"

    def _listener_added(self, event: str, _handler: Any) -> None:
        if event == "dtmf":
            self._listen_for_tones()

    def _listen_for_tones(self) -> None:
        """Detect in-band DTMF in what we receive, from now on (once per call). Always done
        without telephone-events; with them, only once someone listens for keys (a `dtmf`
        handler, `read_dtmf`): it costs decoding audio that is otherwise left undecoded."""
        if self._tone_listener is None:
            self._tone_listener = dtmf.InbandDtmfListener(self._key_presses.tone)
            self._incoming["audio"].add_sink(self._tone_listener)

    def _on_dtmf(self, digit: str) -> None:
        self.received_dtmf += digit
        self._dtmf_queue.put_nowait(digit)
        self.emit("dtmf", digit)

    def _on_track(self, track: Any) -> None:
        source = self._incoming.get(track.kind)
        if source is None:
            return
        source.attach(track)
        self.emit("track", track.kind, source.subscribe(lazy=True))

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        if state == "connected" and self.state == "connecting":
            self._cancel_timer()
            self._connected_at = time.monotonic()
            self._set_state("connected")
            if not self._connected.done():
                self._connected.set_result(None)
            if self.config.media_timeout > 0:
                self._spawn(self._watch_media())
            self.emit("connected")
        elif state == "failed" and self.state != "ended":
            self._spawn(self._end("timeout" if self._connected_at else "failed", notify="failed"))

    async def _watch_media(self) -> None:
        """End the call `timeout` when the peer stops sending media: it vanished (killed,
        unplugged), which ICE consent checks alone would take about 30 s to notice. A held
        call may carry no media at all, so the clock restarts when it is resumed."""
        limit = self.config.media_timeout
        watched = [
            self._incoming[t.kind]
            for t in (self._pc.getTransceivers() if self._pc else [])
            if t.kind in self._incoming and t.currentDirection in ("sendrecv", "recvonly")
        ]
        since = time.monotonic()
        while self.state in ("connected", "held") and watched:
            await asyncio.wait({self._finished}, timeout=min(1.0, limit / 4))  # wakes at the end
            if self.state == "held":
                since = time.monotonic()
                continue
            last = max((s.last_frame_at or since for s in watched), default=since)
            if time.monotonic() - max(last, since) > limit:
                logger.info("call %s: no media from %s for %.0f s", self.id, self.peer, limit)
                await self._end("timeout", notify="timeout")

    async def _set_muted(self, kind: Kind, muted: bool) -> None:
        self._require_live("mute")
        track = self._audio_out if kind == "audio" else self._video_out
        if track is None:
            raise InvalidStateError(f"this call sends no {kind}", self.id)
        track.muted = muted
        await self._send_mediastatus()

    async def _send_mediastatus(self) -> None:
        await self._send(
            {
                "type": "mediastatus",
                "call_id": self.id,
                "audio_muted": self.is_muted,
                "video_muted": self.is_video_muted,
                "deafened": self._deafened,
            }
        )

    def _set_held(self, by: str, held: bool) -> None:
        """Apply a hold change by "local" or "remote" and move between connected and held."""
        was_held = bool(self._held_by)
        if held:
            self._held_by.add(by)
        else:
            self._held_by.discard(by)
        for track in (self._audio_out, self._video_out):
            if track is not None:
                track.held = bool(self._held_by)
        self._update_incoming()
        if held:
            self._set_state("held")
            self.emit("held", by)
        elif was_held and not self._held_by:
            self._set_state("connected")
            self.emit("resumed")

    def _update_incoming(self) -> None:
        for source in self._incoming.values():
            source.silenced = self._deafened or bool(self._held_by)

    def _require_in_call(self, action: str) -> None:
        if self.state not in ("connected", "held"):
            raise InvalidStateError(f"cannot {action} a call that is {self.state}", self.id)

    def _media_error(self, error: MediaError) -> None:
        self.emit("error", error)

    async def _send(self, message: CallMessage) -> None:
        await self._signaling.send(message)

    def _set_state(self, state: CallState) -> None:
        if state == self.state:
            return
        self.prev_state, self.state = self.state, state
        logger.debug("call %s: %s -> %s", self.id, self.prev_state, state)
        self.emit("state", state, self.prev_state)

    def _require(self, state: CallState, action: str) -> None:
        if self.state != state:
            raise InvalidStateError(f"cannot {action} a call in state {self.state}", self.id)

    def _require_live(self, action: str) -> None:
        if self.state == "ended":
            raise InvalidStateError(f"cannot {action}: the call has ended", self.id)

    def _arm_timer(self, seconds: float, reason: str) -> None:
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(
            seconds, lambda: self._spawn(self._end(reason, notify=reason))
        )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _spawn(self, coro: Any) -> TaskHandle:
        """Run `coro` in the call's task group (cancelled once the call has ended)."""
        return self._tasks.spawn(coro)

    def _start_handler(self, coro: Any) -> None:
        self._tasks.spawn(coro, on_error=self._handler_failed)

    def _cancel_work(self) -> None:
        """A handler failed: cancel the call's other tasks now (its end still runs)."""
        self._tasks.close(now=True)

    def _handler_failed(self, exc: BaseException) -> None:
        logger.error("call %s: event handler failed; ending the call", self.id, exc_info=exc)
        if self.state != "ended":
            self._cancel_work()
            self.emit("error", CallError("handler_failed", f"{type(exc).__name__}: {exc}", self.id))
            self._spawn(self._end("error", notify="error"))

    async def _end(self, reason: str, *, notify: str | None = None) -> None:
        """Tear down once: tell the peer, finish playbacks and recordings, close, emit `ended`."""
        if self.state == "ended":
            await asyncio.shield(self._finished)
            return
        # the call's work stops after a grace period (at once if a handler failed, see
        # _cancel_work); the teardown is shielded, whichever of the call's tasks runs it
        self._tasks.close()
        with anyio.CancelScope(shield=True):
            await self._tear_down(reason, notify)

    async def _tear_down(self, reason: str, notify: str | None) -> None:
        self._set_state("ended")
        self.end_reason = reason
        self._audio_out.cancel_inserts()
        if self._rfc4733 is not None:
            self._rfc4733.cancel()
        self._ended_at = time.monotonic()
        self._cancel_timer()
        if notify is not None:
            try:
                await self._send({"type": "hangup", "call_id": self.id, "reason": notify})
            except Exception as exc:  # the peer may be gone already: ending goes on regardless
                logger.info("call %s: could not send hangup: %s", self.id, exc)
        for track in (self._audio_out, self._video_out):
            if track is not None and track.playback is not None:
                for kind in track.playback.kinds:
                    track.playback.release(kind, "ended")
        await asyncio.gather(*(r.stop() for r in self._recorders), return_exceptions=True)
        for source in self._incoming.values():
            await source.close()
        if self._pc is not None:
            with contextlib.suppress(Exception):
                self._final_stats = await self.stats()
            await self._pc.close()
            release(self._pc)
        if not self._connected.done():
            why = f"{reason}: {self.remote_end_reason}" if self.remote_end_reason else reason
            self._connected.set_exception(
                self._failure
                or CallError("not_connected", f"call ended ({why}) before connecting", self.id)
            )
            self._connected.exception()  # retrieved: nobody has to await it
        self.emit("ended", reason, self.duration)
        for event in self.event_names() - set(EVENTS_AFTER_END):
            self.remove_all_listeners(event)
        self._key_presses.close()
        self._finished.set_result(reason)
