"""An audio receive buffer that forwards packets as they come, replacing aiortc's.

aiortc 1.16 gives every audio receiver `JitterBuffer(capacity=16, prefetch=4)`: it holds 4 frames
(80 ms) before releasing any, and after a single lost packet it stalls until 16 more have arrived,
then throws good ones away to catch up, so 5 % packet loss turns into several times that much
missing audio plus bursts of delay. A bot plays to no sound card and needs no playout smoothing
(recordings and frame consumers place audio by its timestamp), so this buffer hands each packet
to the decoder as soon as it is the newest in sequence, skips lost ones at once and drops late
or duplicate ones. `use_for()` is the single place that swaps it in.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterFrame

HALF_SEQUENCE_SPACE = 1 << 15


class AudioJitterBuffer:
    """`add(packet) -> (pli_needed, frame or None)`, the interface aiortc's receiver calls."""

    capacity = 16

    def __init__(self) -> None:
        self._last: int | None = None
        self.skipped = 0  # packets never received (lost)
        self.dropped = 0  # packets received too late or twice

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        if self._last is not None:
            ahead = (sequence - self._last) % (1 << 16)
            if ahead == 0 or ahead > HALF_SEQUENCE_SPACE:
                self.dropped += 1
                return False, None
            self.skipped += ahead - 1
        self._last = sequence
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def use_for(receiver: Any) -> AudioJitterBuffer:
    """Give an aiortc audio `RTCRtpReceiver` this buffer (before media arrives)."""
    buffer = AudioJitterBuffer()
    receiver._RTCRtpReceiver__jitter_buffer = buffer
    return buffer
