"""DTMF for calls: RFC 4733 telephone-events where both ends negotiate them, in-band tones
otherwise; both kinds end up as the same `dtmf(digit)` events, once per key press.

RFC 4733 (https://www.rfc-editor.org/rfc/rfc4733) sends key presses as RTP packets of a
"telephone-event" payload type inside the audio stream. aiortc 1.16 does not support it: it
leaves telephone-event out of its answers (the codec is not in its table) and drops RTP packets
of an unknown payload type before any receiver sees them. This module is the one place that
deals with that, without editing SDP text anywhere (the aiortc internals involved are reached
through `callbot._compat`, which checks them; without them DTMF is in-band only):

- `register_telephone_event()` (run at import) registers telephone-event at 48 and 8 kHz for
  aiortc's codec table, where `callbot._compat.ensure_patched()` adds it when the first bot or
  call is created, so offers and answers negotiate it like any codec;
- `Rfc4733Sender` sits on the call's RTP send path: while a key is being sent it turns the audio
  track's 20 ms packets (same SSRC, same sequence numbers) into telephone-event packets
  (RFC 4733 section 2.5: first packet marked, growing duration, the end packet sent 3 times);
- `hook_receiver()` takes telephone-event packets out of the audio receiver's input before
  aiortc would drop them, and reports each event once (RFC 4733 section 2.5.1.3 redundancy);
- `InbandDtmfListener` runs the Goertzel detector of `analysis` on received audio when the peer
  sends plain tones (a peer may play keys as audio even where telephone-events are negotiated);
- `KeyPresses` merges the two paths so a key that arrives both ways is reported once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from .. import _compat
from .analysis import DTMF_KEYS, DtmfDetector, frame_samples

#: RFC 4733 section 3.2: events 0-15 are the keys 0-9, *, #, A-D.
EVENT_KEYS = "0123456789*#ABCD"
TELEPHONE_EVENT = "audio/telephone-event"
#: Payload types used when we offer (the answerer's choice wins, as usual).
PAYLOAD_TYPES = {48000: 110, 8000: 126}
END_REPEATS = 3  # RFC 4733 section 2.5.1.4: the final packet is sent three times
VOLUME = 10  # -10 dBm0
DETECT_RATE = 8000  # in-band detection runs on 8 kHz audio (DTMF tops out at 1633 Hz)


def register_telephone_event() -> None:
    """Have telephone-event added to aiortc's audio codecs, after the real audio codecs."""
    for clock_rate, payload_type in PAYLOAD_TYPES.items():
        _compat.provide_audio_codec(
            RTCRtpCodecParameters(
                mimeType=TELEPHONE_EVENT,
                clockRate=clock_rate,
                channels=1,
                payloadType=payload_type,
                parameters={"0-15": None},
            )
        )


register_telephone_event()


@dataclass(frozen=True)
class Negotiated:
    """What an answer settled for the audio m-line: the audio codec and telephone-event."""

    audio_payload_type: int
    event_payload_type: int | None  # the one at the audio clock rate: what we send
    clock_rate: int
    #: Every telephone-event type the answer lists: peers may send on any of them (Chromium
    #: sends on its 8 kHz one even with 48 kHz Opus), and all must be kept from aiortc.
    event_payload_types: frozenset[int] = frozenset()


def negotiated(answer_sdp: str) -> Negotiated | None:
    """Read the negotiated audio and telephone-event payload types from an SDP answer."""
    description = SessionDescription.parse(answer_sdp)
    for media in description.media:
        if media.kind != "audio" or not media.rtp.codecs:
            continue
        audio = next(c for c in media.rtp.codecs if c.mimeType.lower() != TELEPHONE_EVENT)
        if audio.payloadType is None:  # (an answer's codecs all have one)
            continue
        event = next(
            (c for c in media.rtp.codecs
             if c.mimeType.lower() == TELEPHONE_EVENT and c.clockRate == audio.clockRate),
            None,
        )  # fmt: skip
        every = frozenset(
            c.payloadType
            for c in media.rtp.codecs
            if c.mimeType.lower() == TELEPHONE_EVENT and c.payloadType is not None
        )
        return Negotiated(
            audio.payloadType, event.payloadType if event else None, audio.clockRate, every
        )
    return None


def refuse_telephone_event(transceiver: Any) -> None:
    """Leave telephone-event out of this audio transceiver's offer or answer (in-band only).

    Preferences cover our offers; for an answer aiortc has already picked the common codecs
    when the transceiver appears, so they are filtered there too.
    """
    from aiortc import RTCRtpSender

    codecs = RTCRtpSender.getCapabilities("audio").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() != TELEPHONE_EVENT])
    _compat.rtp.drop_codecs(transceiver, lambda c: c.mimeType.lower() == TELEPHONE_EVENT)


def check_digits(digits: str) -> str:
    """Upper-cased digits, or ValueError naming the first key that is not a DTMF key."""
    for digit in digits:
        if digit.upper() not in EVENT_KEYS:
            raise ValueError(f"{digit!r} is not a DTMF key (0-9, *, #, A-D)")
    return digits.upper()


# -- sending ----------------------------------------------------------------------------------


def _header_length(packet: bytes) -> int:
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension: 4 bytes plus its declared length in words
        length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
    return length


@dataclass
class _Key:
    digit: str
    duration_ms: int
    gap_ms: int
    done: asyncio.Future[None]


class Rfc4733Sender:
    """Turns outgoing audio packet slots into telephone-event packets while keys are sent."""

    def __init__(
        self, ssrc: int, audio_payload_type: int, event_payload_type: int, clock_rate: int
    ) -> None:
        self.ssrc = ssrc
        self.audio_payload_type = audio_payload_type
        self.event_payload_type = event_payload_type
        self._keys: deque[_Key] = deque()
        self._current: _Key | None = None
        self._start_ts = 0
        self._slots = 0  # packet slots used by the current key (tone, then end repeats)
        self._gap_left = 0
        self._last_ts: int | None = None
        self._step = clock_rate // 50  # timestamp units per 20 ms packet, refined from the stream

    def send(self, digits: str, duration_ms: int, gap_ms: int) -> asyncio.Future[list[None]]:
        """Queue keys; the returned awaitable completes when the last one is sent."""
        loop = asyncio.get_running_loop()
        if not self.busy:
            self._last_ts = None  # packets went by unseen: no step to refine from the last one
        futures = []
        for digit in check_digits(digits):
            key = _Key(digit, duration_ms, gap_ms, loop.create_future())
            self._keys.append(key)
            futures.append(key.done)
        return asyncio.gather(*futures)

    def cancel(self) -> None:
        """Forget the keys not sent yet (the call ended); whoever waits for them is released."""
        for key in [*self._keys, *([self._current] if self._current else [])]:
            if not key.done.done():
                key.done.set_result(None)
        self._keys.clear()
        self._current = None

    @property
    def busy(self) -> bool:
        """Whether packets need `rewrite` now (a key queued, being sent, or its gap running):
        an idle sender is skipped, so a call with no keys pending costs nothing per packet."""
        return self._current is not None or bool(self._keys) or self._gap_left > 0

    def wants(self, packet: bytes) -> bool:
        """Whether this outgoing packet is one of our audio packets."""
        return (
            len(packet) >= 12
            and (packet[1] & 0x7F) == self.audio_payload_type
            and int.from_bytes(packet[8:12], "big") == self.ssrc
        )

    def rewrite(self, packet: bytes) -> bytes:
        """The packet to send in this 20 ms slot: the audio packet, or a telephone-event."""
        timestamp = int.from_bytes(packet[4:8], "big")
        if self._current is None:
            if self._last_ts is not None:
                self._step = (timestamp - self._last_ts) % 2**32 or self._step
            self._last_ts = timestamp
            if self._gap_left > 0 or not self._keys:
                self._gap_left = max(0, self._gap_left - 1)
                return packet
            self._current, self._start_ts, self._slots = self._keys.popleft(), timestamp, 0
        key = self._current
        tone_slots = max(1, math.ceil(key.duration_ms / 20))
        self._slots += 1
        end = self._slots > tone_slots
        duration = min(self._slots, tone_slots) * self._step
        payload = bytes([EVENT_KEYS.index(key.digit), (0x80 if end else 0) | VOLUME])
        payload += min(duration, 0xFFFF).to_bytes(2, "big")
        out = bytearray(packet[: _header_length(packet)])
        out[0] &= 0xDF  # no padding
        out[1] = (0x80 if self._slots == 1 else 0) | self.event_payload_type
        out[4:8] = self._start_ts.to_bytes(4, "big")
        if self._slots >= tone_slots + END_REPEATS:
            self._current = None
            self._gap_left = max(0, math.ceil(key.gap_ms / 20) - END_REPEATS)
            if not key.done.done():
                key.done.set_result(None)
        self._last_ts = timestamp
        return bytes(out) + payload


def hook_sender(transport: Any, sender: Rfc4733Sender) -> None:
    """Route the transport's outgoing RTP through `sender` (once per transport and SSRC)."""
    hooked: dict[int, Rfc4733Sender] | None = _compat.rtp.attached(transport, "dtmf")
    if hooked is None:
        routes: dict[int, Rfc4733Sender] = {}

        def wrap(original: Callable[[bytes], Awaitable[None]]) -> Any:
            async def send_rtp(data: bytes) -> None:
                if len(data) >= 12:
                    owner = routes.get(int.from_bytes(data[8:12], "big"))
                    if owner is not None and owner.busy and owner.wants(data):
                        data = owner.rewrite(data)
                await original(data)

            return send_rtp

        _compat.rtp.hook_send_rtp(transport, wrap)
        _compat.rtp.attach(transport, "dtmf", routes)
        hooked = routes
    hooked[sender.ssrc] = sender


# -- receiving --------------------------------------------------------------------------------


def hook_receiver(receiver: Any, payload_types: set[int], on_digit: Callable[[str], None]) -> None:
    """Take telephone-event packets out of `receiver`'s input and report each event once."""
    seen: deque[int] = deque(maxlen=16)  # start timestamps of recent events

    def wrap(original: Callable[..., Awaitable[None]]) -> Any:
        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            if packet.payload_type not in payload_types:
                await original(packet, arrival_time_ms=arrival_time_ms)
                return
            if len(packet.payload) < 4 or packet.timestamp in seen:
                return  # a redundant copy of an event already reported
            seen.append(packet.timestamp)
            event = packet.payload[0]
            if event < len(EVENT_KEYS):
                on_digit(EVENT_KEYS[event])

        return handle_rtp_packet

    _compat.rtp.hook_handle_rtp(receiver, wrap)


class InbandDtmfListener:
    """A sink of received audio that reports in-band DTMF keys (Goertzel, 8 kHz).

    Lost packets would cut holes in a tone and shorten it below what the detector needs; a
    hole of up to `MAX_CONCEALED` seconds is filled by repeating the previous frame, the way a
    receiver's packet loss concealment would, so keys survive a few percent of loss.
    """

    MAX_CONCEALED = 0.06

    def __init__(self, on_digit: Callable[[str], None]) -> None:
        self._on_digit = on_digit
        self._detector = DtmfDetector(DETECT_RATE)
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=DETECT_RATE)
        self._expected: float | None = None  # where the next frame should start (seconds)
        self._previous = np.zeros(0, np.float32)

    def write(self, frame: av.AudioFrame | av.VideoFrame) -> None:
        """Feed one received frame (a `FrameSink`: only audio carries tones)."""
        if not isinstance(frame, av.AudioFrame):
            return
        at, time_base = frame.pts, frame.time_base
        start = float(at * time_base) if at is not None and time_base is not None else None
        if start is not None and self._expected is not None and self._previous.size:
            missing = round((start - self._expected) / (self._previous.size / DETECT_RATE))
            if 0 < missing * self._previous.size / DETECT_RATE <= self.MAX_CONCEALED:
                self._feed(np.tile(self._previous, missing))
        for converted in self._resampler.resample(frame):
            samples = frame_samples(converted)
            self._feed(samples)
            self._previous = samples
        if start is not None:
            self._expected = start + frame.samples / frame.sample_rate

    def _feed(self, samples: np.ndarray) -> None:
        for digit, _ in self._detector.feed(samples):
            self._on_digit(digit)

    def end(self) -> None:
        return None


class KeyPresses:
    """Reports each key press once when it comes both as a telephone-event and as tones.

    A gateway may pass the tones through in the audio and signal them as events too, so a
    key can arrive both ways. A key on one path is the same press as an unpaired report of
    that key on the other path at most `PAIR_WINDOW` seconds older (tones are found later
    than the event: the detector needs ~60 ms of tone, and a repeated key needs a gap).
    """

    PAIR_WINDOW = 1.0

    def __init__(
        self, on_digit: Callable[[str], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._on_digit = on_digit
        self._clock = clock
        #: Keys reported from each path and not yet paired with the other: (digit, when).
        self._unpaired: dict[str, deque[tuple[str, float]]] = {"event": deque(), "tone": deque()}

    def event(self, digit: str) -> None:
        """A key from an RFC 4733 telephone-event."""
        self._heard("event", "tone", digit)

    def tone(self, digit: str) -> None:
        """A key detected in the received audio."""
        self._heard("tone", "event", digit)

    def _heard(self, path: str, other_path: str, digit: str) -> None:
        now = self._clock()
        mine, other = self._unpaired[path], self._unpaired[other_path]
        for queue in (mine, other):
            while queue and now - queue[0][1] > self.PAIR_WINDOW:
                queue.popleft()
        match = next((entry for entry in other if entry[0] == digit), None)
        if match is not None:
            other.remove(match)  # the same press, already reported from the other path
            return
        mine.append((digit, now))
        self._on_digit(digit)

    def close(self) -> None:
        """Report no more keys: drops the callback (a bound method of the call, whose cycle
        through this object would otherwise outlive the call)."""
        self._on_digit = _ignore_digit


def _ignore_digit(_digit: str) -> None:
    """What a closed `KeyPresses` reports keys to."""


assert set(EVENT_KEYS) == set("".join(DTMF_KEYS))
