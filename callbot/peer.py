"""Peer-connection steps shared by 1:1 calls (`Call`) and group calls (`callbot.group`).

Both negotiate with aiortc the same way: complete SDP with every candidate gathered inside the
call's ICE address filter (`gather_within`), and video restricted to the configured codec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.sdp import SessionDescription
from pyee import EventEmitter

from . import _compat
from ._compat import rtp
from .ice import IceConfig, check_relay_candidates, gather_within
from .media import fastpath, jitter

if TYPE_CHECKING:
    from .media.tracks import OutgoingAudioTrack, OutgoingVideoTrack

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
    _compat.ensure_patched()  # telephone-event in the codec table before the offer is made
    description = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
    await gather_within(ice, pc.setLocalDescription(description))
    await check_relay_candidates(ice, pc.localDescription.sdp)  # relay-only: why no TURN candidate
    return pc.localDescription.sdp


def wire_outgoing(
    pc: RTCPeerConnection,
    answer_sdp: str,
    audio_out: OutgoingAudioTrack | None,
    video_out: OutgoingVideoTrack | None,
    fast: bool = True,
) -> None:
    """Once negotiated: audio leaves as Opus packets only if Opus won (then on the fast path,
    see media/fastpath.py, unless `fast` is False), and a video track that goes from
    passed-through packets back to frames gets aiortc's encoder to start with a keyframe (the
    request aiortc itself makes on a PLI; without it, the encoder's next periodic keyframe)."""
    description = SessionDescription.parse(answer_sdp)
    audio = next((m for m in description.media if m.kind == "audio" and m.rtp.codecs), None)
    if audio is not None and audio_out is not None:
        audio_out.opus = audio.rtp.codecs[0].mimeType.lower() == "audio/opus"
    for sender in pc.getSenders():
        if sender.track is video_out and video_out is not None:
            if _compat.available("keyframe"):
                video_out.keyframe_needed = rtp.keyframe_request(sender)
        elif sender.track is audio_out and audio_out is not None and audio_out.opus and fast:
            fastpath.send_audio(sender, audio_out)


def release(pc: RTCPeerConnection) -> None:
    """Once `pc` is closed: break the reference cycles among its objects (event handlers,
    callbot's hooks, aioice's check list, pyOpenSSL's verify helper) so reference counting
    frees a finished call at once, instead of a full garbage collection much later."""
    if not _compat.available("release"):
        return  # the garbage collector frees the call (later)
    parts: list[Any] = []
    for transceiver in pc.getTransceivers():
        parts += [transceiver.sender, transceiver.receiver]
        jitter.release(transceiver.receiver)
    if pc.sctp is not None:
        parts += [pc.sctp, *rtp.data_channels(pc.sctp)]
    ends = [*pc.getSenders(), *pc.getReceivers(), pc.sctp]
    for dtls in {end.transport for end in ends if end is not None and end.transport is not None}:
        parts += [dtls, dtls.transport, dtls.transport.iceGatherer]
        _release_transport(dtls)
    for part in parts:
        if isinstance(part, EventEmitter):
            part.remove_all_listeners()
        rtp.release_hooks(part)  # callbot's hooks refer back to their object


def _release_transport(dtls: Any) -> None:
    """The cycles of one DTLS transport and the ICE connection under it."""
    rtp.clear_verify_callback(dtls)
    connection = rtp.ice_connection(dtls)
    _compat.ice.clear_check_list(connection)
    rtp.release_hooks(connection)
