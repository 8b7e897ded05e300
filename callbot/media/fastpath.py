"""A lean per-packet path for Opus audio through aiortc: the hot loop of a busy bot.

aiortc moves every 20 ms audio packet through a chain of coroutines: a task per sender woken
per packet, RTP objects built and serialised with a datetime per packet, three awaits down to
`sendto`; and on the way in, an asyncio queue and a task switch before the packet is even
decrypted. At a hundred calls that chain, not the media, is most of the process's CPU.

Two hooks, both made through `callbot._compat` (the aiortc 1.16 / aioice 0.13 internals they
need are checked when it is imported; `supported()` is that check's answer, and aiortc's own
path is used otherwise, after a WARNING naming what is missing):

- Sending: one loop over the process's audio clock sends every call's packet of the tick.
  Each packet is a prepared RTP header (the sender's own header extensions: a template made by
  aiortc's serialiser) with sequence number, timestamp and abs-send-time filled in, then DTMF
  rewriting (dtmf.py), SRTP and `sendto` on the ICE pair in use. The sender's counters (RTCP
  sender reports) and the transport's statistics are kept as aiortc keeps them; the RTCP
  reports of fast senders and receivers go out in one pass per process (reports.py).
- Receiving: the socket hands RTP/RTCP to the connection by its first byte (RFC 7983), not
  after a failed STUN parse; RTP for a hooked audio receiver is handled there: decrypted,
  its header read, receiver statistics (RTCP receiver reports) updated, and the payload handed
  to callbot's jitter buffer. Everything else (DTLS, RTCP, data channels, video, other payload
  types such as telephone-events) still takes aiortc's path, unchanged.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
import weakref
from typing import Any

import pylibsrtp
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from .._compat import available, ice, rtp
from ..safe import get_logger
from . import reports
from .clock import AUDIO_TICKER, Ticker

logger = get_logger(__name__)

NTP_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)
_HEADER = struct.Struct("!HI")  # sequence number and timestamp, at byte 2 of the RTP header


def supported() -> bool:
    """Whether the aiortc/aioice internals the hooks need passed `callbot._compat`'s check
    (which logged a WARNING naming any that is missing)."""
    return available("fastpath") and available("jitter")


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp (what aiortc computes via datetime)."""
    now = time.time() + NTP_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))


# -- sending ------------------------------------------------------------------------------------


def send_audio(sender: Any, track: Any) -> bool:
    """Have `sender` (an aiortc `RTCRtpSender` about to start) send `track`'s Opus packets on
    the shared clock instead of its own task. False when it cannot (already started, or an
    unsupported aiortc): aiortc's path then runs as usual."""
    if not supported() or rtp.sender_started(sender):
        return False

    async def run_rtp(codec: Any) -> None:
        await _run_audio_sender(sender, track, codec)

    rtp.replace_rtp_task(sender, run_rtp)
    reports.report_in_pass(sender, rtp.sender_report)
    return True


def report_receiver(receiver: Any) -> bool:
    """Have an audio `receiver` (not started yet) send its RTCP receiver reports in the
    process's pass (reports.py) instead of its own task; False when it cannot."""
    if not supported() or rtp.receiver_started(receiver):
        return False
    reports.report_in_pass(receiver, rtp.receiver_report)
    return True


async def _run_audio_sender(sender: Any, track: Any, codec: Any) -> None:
    """Stands in for `RTCRtpSender._run_rtp`: registers with the pump until stopped."""
    rtp.rtp_task_started(sender)
    stream = _AudioStream(sender, track, codec)
    pump = _pump()
    pump.add(stream)
    try:
        await stream.finished
    except asyncio.CancelledError:
        pass
    finally:
        pump.remove(stream)
        rtp.rtp_task_exited(sender)


class _AudioStream:
    """One sender's RTP state: its header template, sequence number and timestamp origin."""

    def __init__(self, sender: Any, track: Any, codec: Any) -> None:
        self.sender = sender
        self.track = track
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dtls = sender.transport
        self._connection = rtp.ice_connection(self._dtls)
        self._ssrc = rtp.sender_ssrc(sender)
        self._sequence = random.randint(0, 0xFFFF)
        self._origin = random.randint(0, 0xFFFFFFFF)
        self._header, self._abs_send_time = self._template(sender, codec)

    @staticmethod
    def _template(sender: Any, codec: Any) -> tuple[bytearray, int | None]:
        """The RTP header aiortc would write for this sender, and where abs-send-time sits in
        it (found by serialising two values and comparing), if that extension is in use."""
        extensions_map, ssrc, mid = rtp.header_inputs(sender)
        headers = []
        for value in (0, 0xFFFFFF):
            packet = RtpPacket(payload_type=codec.payloadType, marker=1, ssrc=ssrc)
            packet.extensions.mid = mid
            packet.extensions.abs_send_time = value
            headers.append(packet.serialize(extensions_map))
        differ = [i for i, (a, b) in enumerate(zip(*headers, strict=True)) if a != b]
        return bytearray(headers[0]), (differ[0] if differ else None)

    def send(self, tick: int, ntp: int) -> None:
        """Send this tick's packet (raises ConnectionError once the transport is closed)."""
        payload, pts = self.track.next_payload(tick)
        sender, dtls = self.sender, self._dtls
        if not rtp.sender_enabled(sender):
            return
        if not rtp.dtls_connected(dtls):
            raise ConnectionError("the DTLS transport is not connected")
        timestamp = (self._origin + pts) & 0xFFFFFFFF
        header = self._header
        _HEADER.pack_into(header, 2, self._sequence, timestamp)
        if self._abs_send_time is not None:
            at = self._abs_send_time
            header[at : at + 3] = ((ntp >> 14) & 0xFFFFFF).to_bytes(3, "big")
        data = bytes(header) + payload
        dtmf = rtp.attached(dtls, "dtmf")  # see dtmf.hook_sender
        if dtmf:
            owner = dtmf.get(self._ssrc)
            if owner is not None and owner.busy and owner.wants(data):
                data = owner.rewrite(data)
        protected = rtp.srtp_protect(dtls, data)
        ice.send_on_nominated(self._connection, protected)
        rtp.count_sent(sender, dtls, ntp, timestamp, len(payload), len(protected))
        self._sequence = (self._sequence + 1) & 0xFFFF


class _AudioPump:
    """Every fast audio sender of one event loop, driven by one task on the shared clock."""

    def __init__(self, ticker: Ticker = AUDIO_TICKER) -> None:
        self._ticker = ticker
        self._streams: list[_AudioStream] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: _AudioStream) -> None:
        self._streams.append(stream)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="callbot-pump")

    def remove(self, stream: _AudioStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)

    async def _run(self) -> None:
        tick = None
        while self._streams:
            tick = await self._ticker.next(tick)
            ntp = ntp_now()
            for stream in list(self._streams):
                try:
                    stream.send(tick, ntp)
                except (ConnectionError, MediaStreamError):
                    self._end(stream)
                except Exception:  # a bug here must not stop the other calls' audio
                    logger.exception("sending audio failed; that call's audio stops")
                    self._end(stream)

    def _end(self, stream: _AudioStream) -> None:
        self.remove(stream)
        if not stream.finished.done():
            stream.finished.set_result(None)


_PUMPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AudioPump] = (
    weakref.WeakKeyDictionary()
)


def _pump() -> _AudioPump:
    loop = asyncio.get_running_loop()
    pump = _PUMPS.get(loop)
    if pump is None:
        pump = _PUMPS[loop] = _AudioPump()
    return pump


# -- receiving ----------------------------------------------------------------------------------


class _Header:
    """What callbot's jitter buffer and aiortc's `StreamStatistics` read of a packet."""

    __slots__ = ("_data", "sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int, data: bytes) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self._data = data


class _InlineAudio:
    """One audio receiver's packets, handled as they arrive (see the module docstring)."""

    def __init__(self, receiver: Any, payload_type: int, buffer: Any) -> None:
        self._receiver = receiver
        self._payload_type = payload_type
        self._buffer = buffer
        self._streams: dict[int, StreamStatistics] = rtp.receive_statistics(receiver)
        self._clock_rate = rtp.codec_clock_rate(receiver, payload_type)
        self._seen = 0.0

    def handle(self, dtls: Any, data: bytes) -> bool:
        """Handle one datagram of this receiver's SSRC; False to leave it to aiortc."""
        if data[1] & 0x7F != self._payload_type:
            return False  # e.g. a telephone-event: aiortc's path and callbot's DTMF hook
        rtp.count_received(dtls, len(data))
        try:
            plain = rtp.srtp_receiving(dtls).unprotect(data)
        except pylibsrtp.Error:
            return True  # as aiortc: a packet that fails authentication is dropped
        receiver = self._receiver
        if not rtp.receiver_enabled(receiver):
            return True
        ssrc = int.from_bytes(plain[8:12], "big")
        start = 12 + 4 * (plain[0] & 0x0F)
        if plain[0] & 0x10:  # header extensions: skipped (mid and audio level are not needed)
            start += 4 + 4 * int.from_bytes(plain[start + 2 : start + 4], "big")
        end = len(plain) - (plain[-1] if plain[0] & 0x20 else 0)
        if start > end:
            return True
        packet = _Header(
            int.from_bytes(plain[2:4], "big"), int.from_bytes(plain[4:8], "big"), plain[start:end]
        )
        now = time.monotonic()
        if now - self._seen > 1.0:  # aiortc stamps this per packet; once a second is plenty
            self._seen = now
            rtp.mark_active(receiver, ssrc)
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = StreamStatistics(self._clock_rate)
        # aiortc annotates a full RtpPacket but reads only the sequence number: _Header has it
        stream.add(packet)  # type: ignore[arg-type]
        self._buffer.add(packet)
        return True


def receive_inline(receiver: Any, payload_type: int, buffer: Any) -> bool:
    """Handle `receiver`'s RTP of `payload_type` where it arrives, feeding `buffer` (callbot's
    jitter buffer). Call once the receiver has had its first packet through aiortc (so its
    transport and SSRC are settled). False when it cannot (unsupported aiortc, or a receiver
    that needs aiortc's path: NACK, bandwidth estimation)."""
    if not supported():
        return False
    if not rtp.plain_audio_receiver(receiver, payload_type):
        return False
    dtls = receiver.transport
    connection = rtp.ice_connection(dtls)
    routes: dict[int, _InlineAudio] | None = rtp.attached(connection, "inline")
    if routes is None:
        routes = {}
        rtp.attach(connection, "inline", routes)
        queue = ice.input_queue(connection)
        ssrc_table = rtp.ssrc_table(dtls)

        def data_received(data: bytes, component: int) -> None:
            if (
                data
                and 127 < data[0] < 192
                and len(data) >= 12
                and not 192 <= data[1] <= 208  # RTCP
                and rtp.srtp_receiving(dtls) is not None
                and rtp.dtls_connected(dtls)
            ):
                ssrc = int.from_bytes(data[8:12], "big")
                route = routes.get(ssrc)
                if route is None and queue.empty():  # nothing older left for aiortc's path
                    route = _learn(ssrc)
                if route is not None and route.handle(dtls, data):
                    return
            queue.put_nowait((data, component))

        def _learn(ssrc: int) -> _InlineAudio | None:
            owner = ssrc_table.get(ssrc)
            for route in pending.get(owner, ()):
                routes[ssrc] = route
                return route
            return None

        pending: dict[Any, list[_InlineAudio]] = {}
        rtp.attach(connection, "pending", pending)
        ice.replace_data_received(connection, data_received)
        ice.demux_media_first(connection)
    rtp.attached(connection, "pending").setdefault(receiver, []).append(
        _InlineAudio(receiver, payload_type, buffer)
    )
    return True
