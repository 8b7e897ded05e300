"""Per-call settings shared by `Call` and `Bot`."""

from __future__ import annotations

from dataclasses import dataclass, field

from .ice import IceConfig
from .identity import Trust

VIDEO_CODECS = ("vp8", "h264")


@dataclass(frozen=True)
class CallConfig:
    """How calls are set up: ICE, video size and codec, and timeouts (seconds)."""

    ice: IceConfig = field(default_factory=IceConfig)
    video_size: tuple[int, int] = (640, 480)
    video_codec: str = "vp8"
    ring_timeout: float = 45.0
    connect_timeout: float = 30.0
    #: "auto": RFC 4733 telephone-events when both ends negotiate them, else in-band tones;
    #: "inband": always tones (telephone-event is not offered or accepted).
    dtmf: str = "auto"
    #: A connected call that receives no media for this long (s) ends with reason "timeout":
    #: the peer vanished. 0 turns the watchdog off.
    media_timeout: float = 10.0
    #: Identity key to sign with, pinned peer keys to check, and whether unsigned is refused.
    trust: Trust = field(default_factory=Trust)
    #: Opus audio on callbot's lean packet path (media/fastpath.py) where aiortc allows it;
    #: False keeps aiortc's own path (to compare, or to rule the fast path out).
    fastpath: bool = True

    def __post_init__(self) -> None:
        if self.dtmf not in ("auto", "inband"):
            raise ValueError(f"dtmf must be 'auto' or 'inband', not {self.dtmf!r}")
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video_codec must be one of {VIDEO_CODECS}, not {self.video_codec!r}")
        width, height = self.video_size
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"video_size must be even and at least 16x16, not {self.video_size}")
