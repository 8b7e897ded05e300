"""Peer-connection steps shared by 1:1 calls (`Call`) and group calls (`callbot.group`).

Both negotiate with aiortc the same way: complete SDP with every candidate gathered inside the
call's ICE address filter (`gather_within`), and video restricted to the configured codec.
"""

from __future__ import annotations

from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.sdp import SessionDescription
from pyee import EventEmitter

from .ice import IceConfig, check_relay_candidates, gather_within
from .media import fastpath, jitter

#: Video codec names callbot accepts -> aiortc's MIME types.
VIDEO_MIME_TYPES = {"vp8": "video/VP8", "h264": "video/H264"}


def prefer_video_codec(transceiver: Any, codec: str) -> None:
    """Offer or accept only `codec` ("vp8" or "h264", plus RTX) on a video transceiver."""
    wanted = VIDEO_MIME_TYPES[codec]
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType in (wanted, "video/rtx")])


async def set_local_description(
    pc: RTCPeerConnection, kind: Literal["offer", "answer"], ice: IceConfig
) -> str:
    """Create our offer or answer and apply it, gathering candidates only where `ice`
    allows; returns the complete SDP (candidates included: nothing is trickled)."""
    description = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
    await gather_within(ice, pc.setLocalDescription(description))
    await check_relay_candidates(ice, pc.localDescription.sdp)  # relay-only: why no TURN candidate
    return pc.localDescription.sdp


def wire_outgoing(pc: RTCPeerConnection, answer_sdp: str, audio_out: Any, video_out: Any) -> None:
    """Once negotiated: audio leaves as Opus packets only if Opus won (then on the fast path,
    see media/fastpath.py), and a video track that goes from passed-through packets back to
    frames gets aiortc's encoder to start with a keyframe (through
    `RTCRtpSender._send_keyframe`, the hook aiortc itself uses on a PLI)."""
    description = SessionDescription.parse(answer_sdp)
    audio = next((m for m in description.media if m.kind == "audio" and m.rtp.codecs), None)
    if audio is not None and audio_out is not None:
        audio_out.opus = audio.rtp.codecs[0].mimeType.lower() == "audio/opus"
    for sender in pc.getSenders():
        if sender.track is video_out and video_out is not None:
            video_out.keyframe_needed = sender._send_keyframe
        elif sender.track is audio_out and audio_out is not None and audio_out.opus:
            fastpath.send_audio(sender, audio_out)


#: Instance attributes callbot sets on aiortc/aioice objects (hooks of media/dtmf.py,
#: media/fastpath.py, media/jitter.py): each refers back to its object, a reference cycle.
_HOOKS = {
    "RTCRtpSender": ("_run_rtp",),
    "RTCRtpReceiver": ("_handle_rtp_packet",),
    "RTCDtlsTransport": ("_send_rtp", "_callbot_dtmf"),
    "Connection": ("data_received", "_callbot_inline", "_callbot_pending"),
}


def release(pc: RTCPeerConnection) -> None:
    """Once `pc` is closed: break the reference cycles among its objects (event handlers,
    callbot's hooks, aioice's check list, pyOpenSSL's verify helper) so reference counting
    frees a finished call at once, instead of a full garbage collection much later."""
    parts: list[Any] = []
    for transceiver in pc.getTransceivers():
        parts += [transceiver.sender, transceiver.receiver]
        jitter.release(transceiver.receiver)
    if pc.sctp is not None:
        parts += [pc.sctp, *pc.sctp._data_channels.values()]
    ends = [*pc.getSenders(), *pc.getReceivers(), pc.sctp]
    for dtls in {end.transport for end in ends if end is not None and end.transport is not None}:
        parts += [dtls, dtls.transport, dtls.transport.iceGatherer]
        _release_transport(dtls)
    for part in parts:
        if isinstance(part, EventEmitter):
            part.remove_all_listeners()
        for name in _HOOKS.get(type(part).__name__, ()):
            part.__dict__.pop(name, None)


def _release_transport(dtls: Any) -> None:
    """The cycles of one DTLS transport and the ICE connection under it."""
    helper = getattr(dtls._ssl, "_verify_helper", None) if dtls._ssl is not None else None
    if helper is not None:  # helper -> C callback -> wrapper closure -> helper
        helper.callback = None
    connection = dtls.transport._connection  # aioice's
    connection._check_list.clear()  # pairs -> STUN protocols -> the connection
    for name in _HOOKS["Connection"]:
        connection.__dict__.pop(name, None)
