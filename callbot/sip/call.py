"""`SipCall`: a `Call` whose leg is a SIP dialog of the in-process stack instead of WebRTC.

The state machine, events, playbacks, recordings, frame iterators and end reasons are the
`Call`'s own; only the leg differs. The call's protocol messages (hangup, reject, hold,
resume, transfer) go to `SipLeg`, which turns them into SIP requests (BYE, 486/603, re-INVITE,
REFER); SIP events come back through `SipCall._on_sip`. Media is PCM at the negotiated rate
(8 kHz mono for G.711, 48 kHz stereo for Opus): `MediaPump` moves one 20 ms frame each way per
tick of the process's shared audio clock, the outgoing one from the call's outgoing track (the
prompt cache's packets, decoded) and the incoming one into the call's incoming hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
import numpy as np

from ..call import Call, Direction, RejectReason, check_reject_reason
from ..config import CallConfig
from ..errors import CallbotError, CallError, InvalidStateError, SipError
from ..media import dtmf, opus
from ..media.clock import AUDIO_TICKER
from ..media.decoder import AudioFramer
from ..media.incoming import IncomingMedia
from ..media.pcm import PCM, PcmLeg
from ..media.tracks import OutgoingAudioTrack
from ..safe import get_logger, printable
from ..signaling.messages import CallMessage
from .stack import SipSession, status_of

logger = get_logger(__name__)

#: Places the SIP dialog of an outbound call: URI -> session (the bot's endpoint provides it).
Dial = Callable[[str], Awaitable[SipSession]]

#: How far the stack's telephone-events trail its send request: it sends a key's events with
#: the audio it has queued (up to `MAX_QUEUED` frames), then the key's end packet three times
#: (RFC 4733 section 2.5.1.4).
DTMF_TAIL = 0.2

#: Outgoing 20 ms frames the stack may hold before we drop one (see `MediaPump._send`).
MAX_QUEUED = 3

#: SIP final responses and what the caller's call ends with (RFC 3261 section 21).
END_REASONS = {486: "rejected:busy", 600: "rejected:busy", 603: "rejected:decline",
               408: "no_answer", 480: "no_answer", 487: "no_answer"}  # fmt: skip


def end_reason(close_reason: str) -> str:
    """The `Call` end reason for the stack's close reason ("486 Busy Here", "rtp stream
    error", a BYE's "Connection reset by peer"...)."""
    status = status_of(close_reason)
    if status is not None:
        return END_REASONS.get(status, "failed" if status >= 300 else "remote_hangup")
    if "rtp" in close_reason.lower():
        return "timeout"  # the stack's RTP timeout: the peer vanished
    return "remote_hangup"


class SipLeg:
    """The `CallSignaling` of a SIP call: protocol messages become SIP requests."""

    def __init__(self) -> None:
        self.session: SipSession | None = None
        #: We are refusing the call: the stack's close event is our own, not the peer's.
        self.refusing = False

    async def send(self, message: CallMessage) -> None:
        session = self.session
        if session is None:
            return  # no dialog yet (the INVITE never left): nobody to tell
        if message["type"] == "hangup":
            await session.hangup()
        elif message["type"] == "call_reject":
            await session.reject(busy=message["reason"] == "busy")
        elif message["type"] in ("hold", "resume"):
            await session.hold(message["type"] == "hold")
        elif message["type"] == "transfer":
            await session.transfer(message["target"])
        # mediastatus, call_ringing...: SIP has no such message (the stack sends 180 itself)


class MediaPump:
    """One 20 ms frame each way per clock tick between a call and its SIP session."""

    def __init__(self, session: SipSession, out: OutgoingAudioTrack, hub: IncomingMedia) -> None:
        self._session = session
        self._out = out
        self._hub = hub
        self.format: tuple[int, int, int, int] | None = None  # tx rate, ch, rx rate, ch
        self.sent = 0
        self.dropped = 0  # frames not written: the stack's queue was full
        self._leg: PcmLeg | None = None
        self._rx_samples = 0
        self._rx_layout = "mono"
        #: Received audio as Opus, only while a recorder stores Opus packets (.ogg, .opus).
        self._framer: AudioFramer | None = None
        self._encoder: opus.OpusEncoder | None = None
        self._encoder_pts = 0

    async def run(self) -> None:
        last: int | None = None
        while True:
            last = await AUDIO_TICKER.next(last)
            if self.format is None and not self._open():
                continue
            self._send(last)
            if self.format is not None:
                self._receive()

    def _open(self) -> bool:
        """Once media is up (again, after a renegotiation): the formats both ways."""
        self.format = self._session.audio_format()
        if self.format is None:
            return False
        tx_rate, tx_channels, _, rx_channels = self.format
        self._leg = PcmLeg(tx_rate, tx_channels, PCM)
        self._rx_layout = "stereo" if rx_channels == 2 else "mono"
        # one frame of slack: the stack's clock and ours tick apart by up to a frame
        self._session.write(self._leg.pcm(None))
        return True

    def _send(self, tick: int) -> None:
        """Write this tick's frame, unless the stack still holds `MAX_QUEUED` frames (our
        clock caught up after a stall): then it is dropped, so latency stays bounded and a
        new playback is heard within a frame or two."""
        assert self._leg is not None
        pcm = self._leg.pcm(self._out.next_audio(tick))
        if self._session.tx_buffered() > MAX_QUEUED * len(self._leg.pcm(None)):
            self.dropped += 1
        elif self._session.write(pcm):
            self.sent += 1
        else:
            self.format = None

    def _receive(self) -> None:
        data = self._session.read()
        if data is None:
            self.format = None
            return
        assert self.format is not None
        rate, channels = self.format[2], self.format[3]
        usable = len(data) - len(data) % (2 * channels)
        if not usable:
            return
        samples = np.frombuffer(data[:usable], dtype=np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=self._rx_layout)
        frame.sample_rate = rate
        frame.pts = self._rx_samples
        frame.time_base = fractions.Fraction(1, rate)
        self._rx_samples += frame.samples
        if self._hub.wants_packets:
            self._encode(frame)  # counts the frames too
        else:
            self._hub.frames += 1
            self._hub.last_frame_at = time.monotonic()
        self._hub.deliver(frame)

    def _encode(self, frame: av.AudioFrame) -> None:
        """Received PCM for packet sinks, as 20 ms Opus packets stamped at 48 kHz."""
        if self._framer is None or self._encoder is None:
            self._framer, self._encoder = AudioFramer(), opus.OpusEncoder()
        for chunk in self._framer.push(frame):
            pts = self._encoder_pts
            self._encoder_pts += chunk.samples
            for payload in self._encoder.encode(chunk):
                self._hub.packet(payload, pts)


class SipCall(Call):
    """A call with a SIP peer (`peer` is its URI). Create through `Bot`."""

    def __init__(
        self,
        *,
        direction: Direction,
        peer: str,
        config: CallConfig | None = None,
        metadata: dict[str, Any] | None = None,
        session: SipSession | None = None,
        dial: Dial | None = None,
        local_user: str = "",
        early_media: bool = False,
    ) -> None:
        self._leg = SipLeg()
        super().__init__(direction=direction, peer=peer, signaling=self._leg, config=config,
                         metadata=metadata, local_user=local_user)  # fmt: skip
        self._dial = dial
        self._early_allowed = early_media
        self._pump: MediaPump | None = None
        self._pump_task: asyncio.Task[None] | None = None
        if session is not None:
            self._attach(session)

    def __repr__(self) -> str:
        return f"<SipCall {self.id} {self.direction} {printable(self.peer, 80)} {self.state}>"

    @property
    def sip_call_id(self) -> str:
        """The SIP Call-ID of the dialog (empty before the INVITE left)."""
        return self._leg.session.call_id if self._leg.session is not None else ""

    @property
    def dtmf_mode(self) -> str | None:
        """SIP calls send RFC 4733 telephone-events (and take SIP INFO ones too)."""
        return "rfc4733" if self._pump is not None else None

    async def start(self) -> None:
        """Outbound: send the INVITE; the call is `calling` until answered."""
        self._require("new", "start")
        assert self._dial is not None
        try:
            session = await self._dial(self.peer)
        except SipError as exc:
            await self.fail(CallError(exc.code, str(exc), self.id))
            raise
        self._set_state("calling")
        self._arm_timer(self.config.ring_timeout, "no_answer")
        self._attach(session)  # may deliver at once what the peer already answered

    async def answer(self, video: bool = False) -> None:
        """Inbound: answer (200 OK); the call is `connected` once the peer's ACK arrives."""
        if self.state not in ("ringing", "early"):
            raise InvalidStateError(f"cannot answer a call in state {self.state}", self.id)
        assert self._leg.session is not None
        self._set_state("connecting")
        self._arm_timer(self.config.connect_timeout, "failed")
        try:
            await self._leg.session.answer()
        except Exception as exc:
            error = CallError("negotiation_failed", f"{type(exc).__name__}: {exc}", self.id)
            await self.fail(error)
            raise error from exc

    async def reject(self, reason: RejectReason = "decline") -> None:
        """Inbound: refuse, early media or not: 486 Busy Here whatever the reason (the stack
        sends no 603); this call ends `rejected:<reason>`."""
        check_reject_reason(reason)
        if self.state not in ("ringing", "early"):
            raise InvalidStateError(f"cannot reject a call in state {self.state}", self.id)
        self._leg.refusing = True
        with contextlib.suppress(CallbotError, OSError):
            await self._send({"type": "call_reject", "call_id": self.id, "reason": reason})
        await self._end(f"rejected:{reason}")

    async def early_media(self) -> None:
        """Inbound: media before the answer (183 Session Progress, sent with the INVITE's
        arrival when the bot's SIP settings allow early media): the call is `early`."""
        self._require("ringing", "start early media")
        if not self._early_allowed:
            raise InvalidStateError(
                "early media needs SipSettings(early_media=True) (--sip-early-media)", self.id
            )
        self._set_state("early")
        self._start_media()

    async def send_dtmf(self, digits: str, duration_ms: int = 100, gap_ms: int = 70) -> None:
        """Send DTMF keys as RFC 4733 telephone-events (the stack holds each ~100 ms); returns
        once the last one is on the wire, so a hangup right after does not cut it off."""
        self._require_in_call("send DTMF")
        keys = dtmf.check_digits(digits)
        if not 40 <= duration_ms <= 2000 or not 40 <= gap_ms <= 2000:
            raise ValueError("duration_ms and gap_ms must be between 40 and 2000")
        assert self._leg.session is not None
        await self._leg.session.send_dtmf(keys, gap_ms)
        await asyncio.sleep(DTMF_TAIL)

    def send_data(self, payload: str | bytes) -> None:
        """SIP calls have no data channel: a typed error, never a message queued for nothing."""
        raise CallError("no_data_channel", "SIP calls have no data channel", self.id)

    async def stats(self) -> dict[str, Any]:
        """As `Call.stats`, with the audio format each way and the SIP stack's own report
        (`sip`: RTP packets, loss, jitter... as of the far side's last RTCP report, final
        after the end; see `SipSession.stats`)."""
        result = await super().stats()
        pump, session = self._pump, self._leg.session
        if pump is not None and pump.format is not None:
            tx_rate, tx_channels, rx_rate, rx_channels = pump.format
            result["sent"]["audio"] = {
                "rate": tx_rate,
                "channels": tx_channels,
                "frames": pump.sent,
                "dropped": self._audio_out.dropped + pump.dropped,
            }
            result["received"]["audio"] = {"rate": rx_rate, "channels": rx_channels,
                                           "frames": self._incoming["audio"].frames}  # fmt: skip
        if session is not None:
            result["sip"] = {"call_id": session.call_id, **session.stats()}
        return result

    # -- internals -----------------------------------------------------------------------

    def _attach(self, session: SipSession) -> None:
        self._leg.session = session
        session.listen(self._on_sip)

    def _start_media(self) -> None:
        if self._pump is None and self._leg.session is not None:
            self._pump = MediaPump(self._leg.session, self._audio_out, self._incoming["audio"])
            self._pump_task = asyncio.ensure_future(self._pump.run())

    def _listen_for_tones(self) -> None:
        """Keys come from the stack (RFC 4733 and SIP INFO): no in-band detection."""

    def _on_sip(self, event: str, detail: str) -> None:
        if self.state == "ended":
            return
        if event == "ringing" and self.state == "calling":
            self.emit("ringing")
        elif event == "progress" and self.state == "calling":
            self._set_state("early")
            self._start_media()
        elif event == "established" and self.state in ("calling", "early", "connecting"):
            self._established()
        elif event == "closed" and not self._leg.refusing:
            reason = end_reason(detail)
            if reason != "remote_hangup" and detail:
                self.remote_end_reason = printable(detail, 64)
            self._spawn(self._end(reason))
        elif event in ("hold", "resume") and self.state in ("connected", "held"):
            self._set_held("remote", event == "hold")
        elif event == "dtmf":
            self._on_dtmf(detail)

    def _established(self) -> None:
        self._cancel_timer()
        self._connected_at = time.monotonic()
        self._set_state("connected")
        self._start_media()
        if not self._connected.done():
            self._connected.set_result(None)
        self.emit("connected")

    async def _end(self, reason: str, *, notify: str | None = None) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump_task
        await super()._end(reason, notify=notify)
