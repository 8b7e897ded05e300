"""aiortc internals behind plain functions: senders, receivers, transceivers, DTLS and SCTP
transports. Each attribute used here is listed in `check.NEEDS`, so a renamed one turns its
feature off at import (with a WARNING) instead of failing inside a call.

Upstream hooks: aiortc has no public API for packet-level hooks, extra codecs or the receive
jitter buffer. A request to register codecs was closed without one, the maintainer doubting a
public codec API (https://github.com/aiortc/aiortc/issues/116); a search of aiortc's issues
found no open request for telephone-event (RFC 4733), an RTP send/receive hook or a
pluggable jitter buffer, so there is none to follow yet.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc.clock import current_datetime
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtp import (
    RtcpByePacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from . import ice as _ice

#: Attributes callbot's hooks set on live aiortc/aioice objects (methods replaced by `hook_*`,
#: state kept by `attach`): each refers back to its object, so `release` drops them.
HOOKED_METHODS = ("_run_rtp", "_run_rtcp", "_handle_rtp_packet", "_send_rtp", "data_received")
_STATE_PREFIX = "_callbot_"

# -- callbot's own state on aiortc/aioice objects --------------------------------------------


def attached(owner: Any, key: str) -> Any:
    """What `attach(owner, key, ...)` stored, or None."""
    return owner.__dict__.get(_STATE_PREFIX + key)


def attach(owner: Any, key: str, value: Any) -> None:
    """Keep callbot state on an aiortc/aioice object (e.g. its DTMF senders per SSRC)."""
    owner.__dict__[_STATE_PREFIX + key] = value


def release_hooks(owner: Any) -> None:
    """Drop callbot's replaced methods and attached state from `owner` (after the call)."""
    state = getattr(owner, "__dict__", None)
    if state is None:
        return
    for name in [n for n in state if n.startswith(_STATE_PREFIX)]:
        del state[name]
    for name in HOOKED_METHODS:
        state.pop(name, None)


# -- RTCRtpSender ---------------------------------------------------------------------------


def sender_started(sender: Any) -> bool:
    """Whether `RTCRtpSender.send()` has already run (its RTP task exists)."""
    return bool(sender._RTCRtpSender__started)


def sender_ssrc(sender: Any) -> int:
    return int(sender._ssrc)


def sender_enabled(sender: Any) -> bool:
    return bool(sender._enabled)


def replace_rtp_task(sender: Any, run: Callable[[Any], Awaitable[None]]) -> None:
    """Have `RTCRtpSender.send()` start `run(codec)` as the sender's RTP task."""
    sender._run_rtp = run


def rtp_task_started(sender: Any) -> None:
    """What aiortc's RTP task signals first (`send()` waits for it)."""
    sender._RTCRtpSender__rtp_started.set()


def rtp_task_exited(sender: Any) -> None:
    """What aiortc's RTP task does when it ends: stop the track, signal `stop()`."""
    track = sender._RTCRtpSender__track
    if track is not None:
        track.stop()
        sender._RTCRtpSender__track = None
    sender._RTCRtpSender__rtp_exited.set()


def header_inputs(sender: Any) -> tuple[Any, int, str | None]:
    """The sender's RTP header extension map, SSRC and MID (what its packets carry)."""
    return sender._RTCRtpSender__rtp_header_extensions_map, sender._ssrc, sender._RTCRtpSender__mid


def count_sent(
    sender: Any, dtls: Any, ntp: int, timestamp: int, payload_bytes: int, wire_bytes: int
) -> None:
    """Update the counters aiortc keeps per sent packet: the sender's (RTCP sender reports)
    and the transport's (`getStats()`)."""
    dtls._RTCDtlsTransport__tx_bytes += wire_bytes
    dtls._RTCDtlsTransport__tx_packets += 1
    sender._RTCRtpSender__ntp_timestamp = ntp
    sender._RTCRtpSender__rtp_timestamp = timestamp
    sender._RTCRtpSender__octet_count += payload_bytes
    sender._RTCRtpSender__packet_count += 1


def keyframe_request(sender: Any) -> Callable[[], None]:
    """The call aiortc itself makes on a PLI: the encoder's next frame is a keyframe."""
    return sender._send_keyframe  # type: ignore[no-any-return]


# -- RTCP reports (RTCRtpSender and RTCRtpReceiver) ----------------------------------------


def _private(end: Any, name: str) -> Any:
    """`end.__name` as aiortc's sender or receiver class names it."""
    owner = "RTCRtpReceiver" if isinstance(end, RTCRtpReceiver) else "RTCRtpSender"
    return getattr(end, f"_{owner}__{name}")


def replace_rtcp_task(end: Any, run: Callable[[], Awaitable[None]]) -> None:
    """Have the sender's or receiver's start run `run()` as its RTCP task."""
    end._run_rtcp = run


def rtcp_task_started(end: Any) -> None:
    """What aiortc's RTCP task signals first (`stop()` waits for it)."""
    _private(end, "rtcp_started").set()


def rtcp_task_exited(end: Any) -> None:
    """What aiortc's RTCP task signals last (`stop()` waits for it)."""
    _private(end, "rtcp_exited").set()


def sender_report(sender: Any) -> bytes:
    """The RTCP SR (and SDES with the CNAME) aiortc's sender task would send now, noting the
    report's time for round-trip times as it does (`RTCRtpSender._run_rtcp`)."""
    ntp = sender._RTCRtpSender__ntp_timestamp
    packets: list[Any] = [
        RtcpSrPacket(
            ssrc=sender._ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=sender._RTCRtpSender__rtp_timestamp,
                packet_count=sender._RTCRtpSender__packet_count & 0xFFFFFFFF,
                octet_count=sender._RTCRtpSender__octet_count & 0xFFFFFFFF,
            ),
        )
    ]
    sender._RTCRtpSender__lsr = (ntp >> 16) & 0xFFFFFFFF
    sender._RTCRtpSender__lsr_time = time.time()
    cname = sender._RTCRtpSender__cname
    if cname is not None:
        packets.append(
            RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender._ssrc, items=[(1, cname.encode())])])
        )
    return b"".join(bytes(p) for p in packets)


def receiver_report(receiver: Any) -> bytes | None:
    """The RTCP RR aiortc's receiver task would send now (`RTCRtpReceiver._run_rtcp`), or
    None when it would send none (no RTCP SSRC yet, or nothing received)."""
    lsrs, lsr_times = receiver._RTCRtpReceiver__lsr, receiver._RTCRtpReceiver__lsr_time
    reports = []
    for ssrc, stream in receiver._RTCRtpReceiver__remote_streams.items():
        lsr = dlsr = 0
        if ssrc in lsrs:
            lsr = lsrs[ssrc]
            delay = time.time() - lsr_times[ssrc]
            if 0 < delay < 65536:
                dlsr = int(delay * 65536)
        reports.append(
            RtcpReceiverInfo(
                ssrc=ssrc,
                fraction_lost=stream.fraction_lost,
                packets_lost=stream.packets_lost,
                highest_sequence=stream.max_seq,
                jitter=stream.jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
        )
    rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
    if rtcp_ssrc is None or not reports:
        return None
    return bytes(RtcpRrPacket(ssrc=rtcp_ssrc, reports=reports))


async def send_bye(sender: Any) -> None:
    """The RTCP BYE aiortc's sender task sends when it stops."""
    await sender._send_rtcp([RtcpByePacket(sources=[sender._ssrc])])


def send_rtcp_now(dtls: Any, payload: bytes) -> None:
    """Protect and send a compound RTCP packet without awaiting, counted as aiortc's
    `_send_rtp` counts it; dropped, as aiortc drops it, when the transport is not up."""
    if not dtls_connected(dtls):
        return
    data = dtls._tx_srtp.protect_rtcp(payload)
    try:
        _ice.send_on_nominated(ice_connection(dtls), data)
    except ConnectionError:
        return
    dtls._RTCDtlsTransport__tx_bytes += len(data)
    dtls._RTCDtlsTransport__tx_packets += 1


# -- RTCDtlsTransport -----------------------------------------------------------------------


def dtls_connected(dtls: Any) -> bool:
    return bool(dtls._state == State.CONNECTED)


def srtp_protect(dtls: Any, data: bytes) -> bytes:
    return dtls._tx_srtp.protect(data)  # type: ignore[no-any-return]


def srtp_receiving(dtls: Any) -> Any:
    """The transport's inbound SRTP session (None until the handshake is done)."""
    return dtls._rx_srtp


def count_received(dtls: Any, wire_bytes: int) -> None:
    dtls._RTCDtlsTransport__rx_bytes += wire_bytes
    dtls._RTCDtlsTransport__rx_packets += 1


def ssrc_table(dtls: Any) -> dict[int, Any]:
    """The transport's SSRC -> receiver routing table (filled as packets arrive)."""
    return dtls._rtp_router.ssrc_table  # type: ignore[no-any-return]


def ice_connection(dtls: Any) -> Any:
    """The aioice `Connection` under a DTLS transport."""
    return dtls.transport._connection


def hook_send_rtp(dtls: Any, wrap: Callable[[Any], Any]) -> None:
    """Route the transport's outgoing RTP through `wrap(original_send_rtp)`."""
    dtls._send_rtp = wrap(dtls._send_rtp)


def clear_verify_callback(dtls: Any) -> None:
    """Break pyOpenSSL's verify helper -> C callback -> closure -> helper cycle."""
    helper = getattr(dtls._ssl, "_verify_helper", None) if dtls._ssl is not None else None
    if helper is not None:
        helper.callback = None


# -- RTCRtpReceiver -------------------------------------------------------------------------


def receiver_started(receiver: Any) -> bool:
    """Whether `RTCRtpReceiver.receive()` has already run (its RTCP task exists)."""
    return bool(receiver._RTCRtpReceiver__started)


def receiver_enabled(receiver: Any) -> bool:
    return bool(receiver._enabled)


def plain_audio_receiver(receiver: Any, payload_type: int) -> bool:
    """Whether the receiver needs nothing of aiortc's receive path for this payload type
    (no NACK, no bandwidth estimation, a known codec)."""
    return (
        receiver._RTCRtpReceiver__nack_generator is None
        and receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        and payload_type in receiver._RTCRtpReceiver__codecs
    )


def codec_clock_rate(receiver: Any, payload_type: int) -> int:
    return int(receiver._RTCRtpReceiver__codecs[payload_type].clockRate)


def receive_statistics(receiver: Any) -> dict[int, StreamStatistics]:
    """The receiver's statistics per remote SSRC (what its RTCP receiver reports read)."""
    return receiver._RTCRtpReceiver__remote_streams  # type: ignore[no-any-return]


def mark_active(receiver: Any, ssrc: int) -> None:
    """Note that `ssrc` was heard now (aiortc's `getSynchronizationSources`)."""
    receiver._RTCRtpReceiver__active_ssrc[ssrc] = current_datetime()


def jitter_buffer(receiver: Any) -> Any:
    return getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)


def use_jitter_buffer(receiver: Any, buffer: Any) -> None:
    """Have the receiver hand its packets to `buffer.add(packet)` instead of aiortc's."""
    receiver._RTCRtpReceiver__jitter_buffer = buffer


def depayloaded(packet: Any) -> bytes:
    """A received packet's payload as aiortc's receiver depayloaded it for the jitter buffer."""
    return packet._data  # type: ignore[no-any-return]


def hook_handle_rtp(receiver: Any, wrap: Callable[[Any], Any]) -> None:
    """Route the receiver's incoming RTP through `wrap(original_handle_rtp_packet)`."""
    receiver._handle_rtp_packet = wrap(receiver._handle_rtp_packet)


# -- RTCRtpTransceiver, RTCSctpTransport -------------------------------------------------------


def drop_codecs(transceiver: Any, unwanted: Callable[[Any], bool]) -> None:
    """Remove codecs from those aiortc already chose for this transceiver's answer."""
    transceiver._codecs = [c for c in getattr(transceiver, "_codecs", []) if not unwanted(c)]


def data_channels(sctp: Any) -> list[Any]:
    return list(sctp._data_channels.values())
