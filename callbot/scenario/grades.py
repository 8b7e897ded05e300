"""A call's grades for `--json`: estimated MOS per direction, audio dropouts, video freezes
and mouth-to-ear delay.

`PacketProbe` watches the caller's RTP datagrams where they leave and arrive (after any
impairment on the way in, so it sees what the caller's receiver got). RTP headers travel in
the clear under SRTP (RFC 3711 section 3.1), so sequence numbers, timestamps and payload
types are read without decrypting. The received direction is graded from what the probe saw;
the sent direction from the far side's RTCP receiver reports (loss, jitter) and the round trip
time (RFC 3550 section 6.4.1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import emodel
from .impair import is_rtp_or_rtcp

#: A gap between two received audio packets longer than this is a dropout the listener hears
#: (whether packets were lost, late, or the far side stopped sending).
DROPOUT_GAP = 0.06
#: A gap between decoded video frames longer than this is a freeze.
FREEZE_GAP = 0.5


@dataclass
class _Stream:
    """One received SSRC: sequence numbers (extended), arrival times, RFC 3550 jitter."""

    clock: int
    sequences: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    jitter: float = 0.0  # in timestamp units
    _last: tuple[float, int] | None = None
    _cycles: int = 0
    _highest: int = -1

    def add(self, sequence: int, timestamp: int, now: float) -> None:
        if self._highest >= 0 and sequence < (self._highest & 0xFFFF) - 0x8000:
            self._cycles += 0x10000  # wrapped (RFC 3550 appendix A.1)
        extended = self._cycles + sequence
        self._highest = max(self._highest, extended)
        self.sequences.append(extended)
        self.arrivals.append(now)
        if self._last is not None:  # RFC 3550 appendix A.8
            before, stamp = self._last
            transit = (now - before) * self.clock - ((timestamp - stamp) & 0xFFFFFFFF)
            if abs(transit) < self.clock:  # over 1 s: the sender paused, not network jitter
                self.jitter += (abs(transit) - self.jitter) / 16
        self._last = (now, timestamp)

    def loss_runs(self) -> list[int]:
        """Lengths of the runs of sequence numbers that never arrived."""
        if not self.sequences:
            return []
        seen = np.unique(np.asarray(self.sequences))
        gaps = np.diff(seen) - 1
        return [int(g) for g in gaps if g > 0]

    def summary(self) -> dict[str, Any]:
        runs = self.loss_runs()
        received = len(set(self.sequences))
        expected = (max(self.sequences) - min(self.sequences) + 1) if self.sequences else 0
        lost = max(0, expected - received)
        arrivals = np.sort(np.asarray(self.arrivals))
        gaps = np.diff(arrivals) if arrivals.size > 1 else np.zeros(0)
        dropouts = gaps[gaps > DROPOUT_GAP]
        return {
            "packets": len(self.sequences),
            "expected": expected,
            "lost": lost,
            "loss_percent": round(100 * lost / expected, 2) if expected else 0.0,
            "mean_burst": round(float(np.mean(runs)), 2) if runs else 0.0,
            "jitter_ms": round(1000 * self.jitter / self.clock, 2),
            "dropouts": int(dropouts.size),
            "longest_dropout_ms": round(1000 * float(dropouts.max()), 1) if dropouts.size else 0,
        }


class PacketProbe:
    """Counts the caller's RTP per direction; audio streams are told apart by payload type."""

    def __init__(self, audio_types: dict[int, tuple[str, int]]) -> None:
        self.audio_types = audio_types  # payload type -> (codec name, clock rate)
        self.received: dict[int, _Stream] = {}
        self.sent_packets = 0
        self.codec = next(iter(audio_types.values()), ("opus", 48000))[0]

    def outgoing(self, data: bytes) -> None:
        if _rtp_type(data) in self.audio_types:
            self.sent_packets += 1

    def incoming(self, data: bytes) -> None:
        payload_type = _rtp_type(data)
        if payload_type not in self.audio_types:
            return
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.received.get(ssrc)
        if stream is None:
            stream = self.received[ssrc] = _Stream(self.audio_types[payload_type][1])
        stream.add(
            int.from_bytes(data[2:4], "big"), int.from_bytes(data[4:8], "big"), time.monotonic()
        )

    def received_audio(self) -> dict[str, Any]:
        """The busiest received audio stream's summary (empty before any packet)."""
        if not self.received:
            return {}
        return max(self.received.values(), key=lambda s: len(s.sequences)).summary()


def _rtp_type(data: bytes) -> int | None:
    """The payload type of an RTP datagram; None for RTCP (types 192-223, RFC 5761) or other."""
    if not is_rtp_or_rtcp(data) or 192 <= data[1] <= 223:
        return None
    return data[1] & 0x7F


def audio_payload_types(sdp: str) -> dict[int, tuple[str, int]]:
    """Payload type -> (codec, clock rate) of the audio codecs in an SDP (telephone-event
    and comfort noise left out: they are not the voice)."""
    from aiortc.sdp import SessionDescription

    out: dict[int, tuple[str, int]] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.kind != "audio":
            continue
        for codec in media.rtp.codecs:
            name = codec.mimeType.split("/")[-1].lower()
            if codec.payloadType is not None and name not in ("telephone-event", "cn", "red"):
                out[codec.payloadType] = (name, codec.clockRate)
    return out


async def remote_reports(pc: Any) -> dict[str, float]:
    """What the far side reported about our audio (RTCP receiver reports): loss, jitter, RTT,
    and how many packets we had sent when the last report came (its loss's denominator: the
    report is up to ~1.5 s old, so the packets sent since are not yet counted either way)."""
    if pc is None:
        return {}
    report = await pc.getStats()
    for stat in report.values():
        if stat.type == "remote-inbound-rtp" and getattr(stat, "kind", "") == "audio":
            return {
                "packets_lost": float(stat.packetsLost),
                "packets_sent": float(stat.packetsReceived + stat.packetsLost),
                "jitter_ms": 1000 * stat.jitter / 48000,
                "rtt_ms": 1000 * float(stat.roundTripTime or 0.0),
            }
    return {}


def grades(
    probe: PacketProbe, remote: dict[str, float], echo_ms: float | None, video: dict[str, Any]
) -> dict[str, Any]:
    """The `grades` entry of the report: MOS per direction and what it was computed from."""
    received = probe.received_audio()
    rtt = remote.get("rtt_ms", 0.0)
    out: dict[str, Any] = {}
    if received:
        share = received["loss_percent"] / 100
        out["received"] = {
            **emodel.grade(
                probe.codec,
                received["loss_percent"],
                emodel.burst_ratio(share, received["mean_burst"]),
                rtt,
                received["jitter_ms"],
            ).as_dict(),
            "packets": received["packets"],
            "lost": received["lost"],
            "jitter_ms": received["jitter_ms"],
            "dropouts": received["dropouts"],
            "longest_dropout_ms": received["longest_dropout_ms"],
        }
    if remote and probe.sent_packets:
        lost = max(0.0, remote["packets_lost"])
        percent = 100 * lost / max(1.0, remote["packets_sent"])
        out["sent"] = {
            **emodel.grade(probe.codec, percent, 1.0, rtt, remote["jitter_ms"]).as_dict(),
            "packets": probe.sent_packets,
            "lost": int(lost),
            "jitter_ms": round(remote["jitter_ms"], 2),
        }
    out["rtt_ms"] = round(rtt, 1)
    out["mouth_to_ear_ms"] = None if echo_ms is None else round(echo_ms, 1)
    if video:
        out["video"] = video
    mos = [entry["mos"] for key, entry in out.items() if key in ("sent", "received")]
    out["mos"] = min(mos) if mos else None
    return out


def sip_grades(rtp: dict[str, Any], echo_ms: float | None) -> dict[str, Any]:
    """The `grades` of a SIP call, from the SIP stack's RTP report (`SipCall.stats()["sip"]`
    with the `codec`): received loss and jitter as the stack counted them, sent loss and jitter
    from the far side's RTCP receiver reports, RTT from RTCP (RFC 3550 section 6.4). Nothing is
    graded before the far side's first RTCP report (until then the stack reports zeros). The
    burst ratio is 1 (the stack counts losses, not their runs); there are no dropouts (the stack
    hands over decoded audio, not packet arrivals)."""
    out: dict[str, Any] = {"rtcp_reports": rtp.get("rtcp_reports", 0), "rtt_ms": None}
    if out["rtcp_reports"]:
        rtt, codec = float(rtp["rtt_ms"]), rtp["codec"]
        out["rtt_ms"] = round(rtt, 1)
        for key, prefix in (("received", "rx"), ("sent", "tx")):
            packets, lost = rtp[f"{prefix}_packets"], max(0, rtp[f"{prefix}_lost"])
            if not packets:
                continue
            # the far side's report counts what it expected of ours; we count what we got
            total = packets if key == "sent" else packets + lost
            jitter = float(rtp[f"{prefix}_jitter_ms"])
            out[key] = {
                **emodel.grade(codec, 100 * lost / total, 1.0, rtt, jitter).as_dict(),
                "packets": packets,
                "lost": lost,
                "jitter_ms": round(jitter, 2),
            }
    out["mouth_to_ear_ms"] = None if echo_ms is None else round(echo_ms, 1)
    mos = [out[key]["mos"] for key in ("sent", "received") if key in out]
    out["mos"] = min(mos) if mos else None
    return out


def video_freezes(arrivals: list[float], frozen_runs: list[float]) -> dict[str, Any]:
    """Frames decoded, the longest gap between them, and frozen stretches (identical frames)."""
    gaps = np.diff(np.asarray(arrivals)) if len(arrivals) > 1 else np.zeros(0)
    return {
        "frames": len(arrivals),
        "longest_gap_ms": round(1000 * float(gaps.max()), 1) if gaps.size else None,
        "freezes": int((gaps > FREEZE_GAP).sum()),
        "frozen_seconds": round(sum(frozen_runs), 2),
        "longest_frozen_ms": round(1000 * max(frozen_runs), 1) if frozen_runs else 0.0,
    }


def echo_delay(sent: np.ndarray, heard: np.ndarray, rate: int) -> tuple[float, float] | None:
    """(delay seconds, normalised correlation) of `sent` inside `heard` (both at `rate`),
    from the peak of their cross-correlation; None when there is nothing to correlate."""
    if sent.size < rate // 50 or heard.size < sent.size:
        return None
    size = 1 << int(np.ceil(np.log2(heard.size + sent.size)))
    spectrum = np.fft.rfft(heard, size) * np.conj(np.fft.rfft(sent, size))
    correlation = np.fft.irfft(spectrum, size)[: heard.size - sent.size + 1]
    lag = int(np.argmax(correlation))
    window = heard[lag : lag + sent.size]
    norm = float(np.linalg.norm(sent) * np.linalg.norm(window))
    if norm == 0:
        return None
    return lag / rate, float(correlation[lag]) / norm
