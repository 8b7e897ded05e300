"""The one place that touches aiortc/aioice internals, checked at import.

callbot reaches below aiortc's public API for its lean packet path (media/fastpath.py), its
audio receive buffer (media/jitter.py), RFC 4733 DTMF (media/dtmf.py), the per-call ICE
address filter (ice.py), freeing ended calls early (peer.py) and storing received VP8 as is
(`videotap`). Those modules call the plain
functions of `rtp` (aiortc) and `ice` (aioice) here; `check.NEEDS` lists every internal those
functions use, and importing this package checks them: a missing one turns off the feature
that needs it, with a WARNING naming it (`available()` then answers False and callers use
aiortc's own behaviour).

Nothing is patched at import: `ensure_patched()`, called when a `Bot` or `Call` is created or
candidates are gathered, adds what callbot registered (telephone-event in aiortc's codec table,
the host-address filter in aioice), once per process.
"""

from __future__ import annotations

from typing import Any

import aiortc.codecs

from ..safe import get_logger
from . import ice, rtp, videotap
from .check import FALLBACKS, NEEDS, Need, Report, check
from .ice import HostAddresses

__all__ = [
    "FALLBACKS",
    "NEEDS",
    "Need",
    "Report",
    "available",
    "check",
    "ensure_patched",
    "ice",
    "is_patched",
    "missing",
    "provide_audio_codec",
    "provide_host_addresses",
    "recheck",
    "rtp",
    "videotap",
]

logger = get_logger("callbot.compat")

_report = check()
_audio_codecs: list[Any] = []
_host_addresses: list[HostAddresses] = []


def recheck() -> Report:
    """Run the check again (after an upgrade in place, or in tests) and use its outcome."""
    global _report
    _report = check()
    return _report


def available(feature: str) -> bool:
    """Whether `feature` (a key of `FALLBACKS`) can use the internals it needs."""
    return _report.ok(feature)


def missing(feature: str) -> tuple[str, ...]:
    """The internals `feature` lacks, as named in the WARNING (empty when available)."""
    return _report.missing.get(feature, ())


def provide_audio_codec(codec: Any) -> None:
    """Register an `RTCRtpCodecParameters` for aiortc's audio codec table; it is added when
    `ensure_patched()` runs (media/dtmf.py registers telephone-event)."""
    _audio_codecs.append(codec)


def provide_host_addresses(function: HostAddresses) -> None:
    """Register the replacement of aioice's host-address function (ice.py's filter)."""
    _host_addresses[:] = [function]


def ensure_patched() -> None:
    """Apply what was registered, where the check allows it; idempotent and cheap, so every
    Bot, Call and gathering calls it."""
    if available("dtmf"):
        table = aiortc.codecs.CODECS["audio"]
        known = {(c.mimeType.lower(), c.clockRate) for c in table}
        for codec in _audio_codecs:
            if (codec.mimeType.lower(), codec.clockRate) not in known:
                table.append(codec)
    hosts = _host_addresses[0] if _host_addresses else None
    if available("ice-filter") and hosts and not ice.host_addresses_installed(hosts):
        ice.install_host_addresses(hosts)


def is_patched() -> dict[str, bool]:
    """Whether each registered patch is in place (for diagnostics and tests)."""
    table = aiortc.codecs.CODECS["audio"]
    return {
        "audio_codecs": bool(_audio_codecs) and all(c in table for c in _audio_codecs),
        "host_addresses": bool(_host_addresses)
        and ice.host_addresses_installed(_host_addresses[0]),
    }
