"""Encoded video as aiortc's receiver assembles it, before its decoder: what recordings store
as is (see writers.Vp8PacketWriter), so recording video costs no decoding or encoding.

aiortc 1.16's `RTCRtpReceiver` depacketizes RTP into whole encoded frames (`JitterFrame`:
`data`, `timestamp` in the 90 kHz clock from 0) and puts `(codec, frame)` on its decoder
thread's queue. That queue is the seam: wrapped, it shows each frame to callbot first, then
hands it on unchanged. aiortc has no public way to ask the sender for a keyframe; its own
`_send_rtcp_pli` (what it sends after a decoding error) is used.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from ..safe import get_logger

logger = get_logger(__name__)

OnFrame = Callable[[bytes, int], None]
_SENDING: set[asyncio.Future[None]] = set()


class _TappedQueue:
    """aiortc's decoder queue, showing each encoded frame to `on_frame` before queueing it."""

    def __init__(self, inner: Any, on_frame: OnFrame) -> None:
        self._inner = inner
        self._on_frame = on_frame

    def put(self, item: Any) -> None:
        if item is not None:  # None: the receiver stopping its decoder thread
            _codec, frame = item
            try:
                self._on_frame(frame.data, frame.timestamp)
            except Exception:  # a recorder's bug must not stop the call's video
                logger.exception("encoded video tap failed")
        self._inner.put(item)

    def __getattr__(self, name: str) -> Any:  # get() etc., if the decoder thread reads us
        return getattr(self._inner, name)


def tap_encoded_video(receiver: Any, on_frame: OnFrame) -> Callable[[], None] | None:
    """Show every encoded frame `receiver` (an aiortc video `RTCRtpReceiver`) assembles to
    `on_frame(data, pts)`; return a function asking the sender for a keyframe (RTCP PLI,
    RFC 4585 §6.3.1), or None where the check found these internals missing (the decoder
    queue and `_send_rtcp_pli`, the "videotap" feature of check.NEEDS)."""
    from . import available  # the package imports this module: resolved at call time

    inner = getattr(receiver, "_RTCRtpReceiver__decoder_queue", None)
    if inner is None or not available("videotap"):
        return None
    if isinstance(inner, _TappedQueue):  # tapped already (negotiated again): retarget
        inner._on_frame = on_frame
    else:
        receiver._RTCRtpReceiver__decoder_queue = _TappedQueue(inner, on_frame)
    ref = weakref.ref(receiver)  # the hub keeps this function: no cycle back to the receiver

    def request_keyframe() -> None:
        live = ref()
        if live is not None:
            for source in live.getSynchronizationSources():
                task = asyncio.ensure_future(live._send_rtcp_pli(source.source))
                _SENDING.add(task)  # kept until sent (the loop holds tasks weakly)
                task.add_done_callback(_SENDING.discard)

    return request_keyframe
