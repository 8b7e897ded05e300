"""The table of aiortc/aioice internals callbot relies on, checked when `callbot._compat` is
imported: what is missing turns off the feature that needs it, with a WARNING naming it.

Each `Need` names one attribute as written in the upstream source (`__track` for a private,
name-mangled one) and how to recognise it without a live object: a method or function with its
parameters, an instance attribute that the class's `__init__` names (read from the compiled
code, so no peer connection is built; `where` names another method when the attribute is set
there), or a module-level value or class attribute.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Literal

import aioice
import aioice.ice
import aiortc
import aiortc.clock
import aiortc.codecs
import aiortc.rtcdtlstransport
import aiortc.rtcicetransport
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import aiortc.rtcrtptransceiver
import aiortc.rtcsctptransport
from OpenSSL import SSL

from ..safe import get_logger

logger = get_logger("callbot.compat")

#: Features built on internals, and what callbot does instead when one is missing.
FALLBACKS = {
    "fastpath": "Opus audio takes aiortc's own per-packet path (media/fastpath.py is off)",
    "jitter": "received audio goes through aiortc's jitter buffer and decoder thread",
    "dtmf": "RFC 4733 telephone-events are not negotiated: DTMF is in-band tones only",
    "ice-filter": "aioice picks host addresses itself: no per-call ICE address filter, "
    "no loopback fallback",
    "release": "an ended call's objects are freed by the garbage collector, later",
    "keyframe": "video switching from packets to frames waits for the encoder's next keyframe",
    "impair": "`--impair` and a scenario's packet grades are unavailable (the call runs "
    "unimpaired)",
    "videotap": "video recorded to .webm/.mkv is decoded and encoded again, not stored as received",
}
#: The versions whose internals `NEEDS` was written against (pyproject.toml pins them).
TESTED = {"aiortc": (aiortc, "1.16."), "aioice": (aioice, "0.13.")}

Kind = Literal["method", "init", "attr", "value"]


@dataclass(frozen=True)
class Need:
    """One internal: `owner.name`, recognised by `kind` (see the module docstring)."""

    feature: str
    owner: Any  # a class or a module
    name: str
    kind: Kind
    params: tuple[str, ...] = ()  # for "method": the parameters after `self`
    where: str = "__init__"  # for "init": the method whose code names the attribute

    @property
    def label(self) -> str:
        """How warnings name it: `RTCRtpSender.__track`, `aioice.ice.get_host_addresses`."""
        owner = self.owner.__qualname__ if isinstance(self.owner, type) else self.owner.__name__
        return f"{owner}.{self.name}"

    def attribute(self) -> str:
        """The name as Python stores it (`__x` on class C is `_C__x`)."""
        if self.name.startswith("__") and isinstance(self.owner, type):
            return f"_{self.owner.__name__.lstrip('_')}{self.name}"
        return self.name

    def present(self) -> bool:
        """Whether the upstream code still has this internal, with the expected shape."""
        if self.kind == "init":
            method = getattr(self.owner, self.where, None)
            code = getattr(method, "__code__", None)
            return code is not None and self.attribute() in code.co_names
        if not hasattr(self.owner, self.attribute()):
            return False
        if self.kind != "method":
            return True
        try:
            signature = inspect.signature(getattr(self.owner, self.attribute()))
        except (TypeError, ValueError):
            return False
        names = [p for p in signature.parameters if p != "self"]
        return names == list(self.params)


_sender = aiortc.rtcrtpsender.RTCRtpSender
_receiver = aiortc.rtcrtpreceiver.RTCRtpReceiver
_dtls = aiortc.rtcdtlstransport.RTCDtlsTransport
_connection = aioice.ice.Connection


def _inits(feature: str, owner: type, *names: str) -> list[Need]:
    return [Need(feature, owner, name, "init") for name in names]


NEEDS: list[Need] = [
    # media/fastpath.py, sending: the sender's RTP task is replaced, its counters kept
    Need("fastpath", _sender, "_run_rtp", "method", ("codec",)),
    Need("fastpath", _sender, "__track", "init", where="_run_rtp"),  # set by replaceTrack
    *_inits("fastpath", _sender, "__started", "__rtp_started", "__rtp_exited",
            "__rtp_header_extensions_map", "_ssrc", "__mid", "_enabled", "__ntp_timestamp",
            "__rtp_timestamp", "__octet_count", "__packet_count"),
    *_inits("fastpath", _dtls, "_state", "_tx_srtp", "_rx_srtp", "_rtp_router", "__tx_bytes",
            "__tx_packets", "__rx_bytes", "__rx_packets"),
    Need("fastpath", aiortc.rtcdtlstransport.State, "CONNECTED", "attr"),
    Need("fastpath", aiortc.rtcdtlstransport.RtpRouter, "ssrc_table", "init"),
    Need("fastpath", aiortc.rtcicetransport.RTCIceTransport, "_connection", "init"),
    *_inits("fastpath", _connection, "_nominated", "_queue"),
    Need("fastpath", _connection, "data_received", "method", ("data", "component")),
    Need("fastpath", aioice.ice.CandidatePair, "protocol", "init"),
    Need("fastpath", aioice.ice.CandidatePair, "remote_addr", "attr"),
    Need("fastpath", aioice.ice, "StunProtocol", "value"),
    # _compat/ice.demux_media_first: RTP/RTCP handed on without a STUN parse
    Need("fastpath", aioice.ice.StunProtocol, "datagram_received", "method", ("data", "addr")),
    Need("fastpath", aioice.ice.StunProtocol, "local_candidate", "init",
         where="datagram_received"),
    # media/fastpath.py, receiving: packets handled where they arrive, statistics kept
    *_inits("fastpath", _receiver, "__nack_generator", "__remote_bitrate_estimator",
            "__codecs", "__remote_streams", "__active_ssrc", "_enabled"),
    Need("fastpath", aiortc.rtcrtpreceiver.StreamStatistics, "add", "method", ("packet",)),
    Need("fastpath", aiortc.clock, "current_datetime", "value"),
    # media/reports.py: RTCP reports of fast-path audio in one pass per process
    *[Need("fastpath", end, "_run_rtcp", "method", ()) for end in (_sender, _receiver)],
    *_inits("fastpath", _sender, "__rtcp_started", "__rtcp_exited", "__cname", "__lsr",
            "__lsr_time"),
    Need("fastpath", _sender, "_send_rtcp", "method", ("packets",)),
    *_inits("fastpath", _receiver, "__started", "__rtcp_started", "__rtcp_exited", "__lsr",
            "__lsr_time", "__rtcp_ssrc"),
    *_inits("fastpath", aiortc.rtcrtpreceiver.StreamStatistics, "packets_received", "max_seq"),
    *[Need("fastpath", aiortc.rtcrtpreceiver.StreamStatistics, name, "attr")
      for name in ("fraction_lost", "packets_lost", "jitter")],
    # media/jitter.py: callbot's receive buffer in place of aiortc's
    Need("jitter", _receiver, "__jitter_buffer", "init"),
    Need("jitter", _receiver, "_handle_rtp_packet", "method", ("packet", "arrival_time_ms")),
    Need("jitter", aiortc.rtcrtpreceiver, "TimestampMapper", "value"),
    # media/dtmf.py: telephone-event in the codec table, RTP hooks on both sides
    Need("dtmf", aiortc.codecs, "CODECS", "value"),
    Need("dtmf", aiortc.rtcrtptransceiver.RTCRtpTransceiver, "_codecs", "init"),
    Need("dtmf", _dtls, "_send_rtp", "method", ("data",)),
    Need("dtmf", _receiver, "_handle_rtp_packet", "method", ("packet", "arrival_time_ms")),
    # ice.py: the per-call host-address filter
    # scenario/impair.py, scenario/grades.py: datagrams tapped where they leave and arrive
    Need("impair", _connection, "_protocols", "init"),
    Need("impair", aioice.ice.StunProtocol, "transport", "init", where="connection_made"),
    Need("impair", aioice.ice.StunProtocol, "datagram_received", "method", ("data", "addr")),
    Need("ice-filter", aioice.ice, "get_host_addresses", "method", ("use_ipv4", "use_ipv6")),
    # peer.release: reference cycles broken when a call ends
    Need("release", aiortc.rtcsctptransport.RTCSctpTransport, "_data_channels", "init"),
    Need("release", _dtls, "_ssl", "init"),
    Need("release", _connection, "_check_list", "init"),
    Need("release", SSL.Connection, "_verify_helper", "init"),
    # peer.wire_outgoing: the keyframe request aiortc itself makes on a PLI
    Need("keyframe", _sender, "_send_keyframe", "method", ()),
    # videotap.py: received VP8 frames stored as they are, and a PLI to get a keyframe
    Need("videotap", _receiver, "__decoder_queue", "init"),
    Need("videotap", _receiver, "_send_rtcp_pli", "method", ("media_ssrc",)),
]  # fmt: skip


@dataclass(frozen=True)
class Report:
    """The outcome of `check()`: what is missing, per feature."""

    missing: dict[str, tuple[str, ...]]

    def ok(self, feature: str) -> bool:
        return not self.missing.get(feature)


def _untested_versions() -> list[str]:
    return [
        f"{name} {module.__version__} (written for {prefix}x)"
        for name, (module, prefix) in TESTED.items()
        if not module.__version__.startswith(prefix)
    ]


def check(needs: list[Need] | None = None) -> Report:
    """Look for every internal in `needs` (default: `NEEDS`) and log a WARNING for each
    feature that falls back, naming what is missing. A version other than the tested one
    turns the fast path off too: its internals may keep their names but change meaning."""
    missing: dict[str, list[str]] = {}
    for need in NEEDS if needs is None else needs:
        if not need.present():
            missing.setdefault(need.feature, []).append(need.label)
    untested = _untested_versions()
    if untested:
        missing.setdefault("fastpath", []).extend(untested)
    for feature, labels in missing.items():
        logger.warning(
            "aiortc/aioice internals missing (%s): %s", ", ".join(labels), FALLBACKS[feature]
        )
    return Report({feature: tuple(labels) for feature, labels in missing.items()})
