"""The ITU-T G.107 E-model, reduced to what a call's statistics give: an estimated MOS from
packet loss, burstiness, one-way delay and codec (https://www.itu.int/rec/T-REC-G.107).

    R = Ro - Is - Id - Ie_eff + A, taken here as R = 93.2 - Id - Ie_eff

93.2 is `Ro - Is` with every G.107 default (no noise, no echo, no advantage factor A). The
delay impairment is the widely used simplification of G.107's Id (Cole and Rosenbluth,
"Voice over IP performance monitoring", ACM CCR 2001):

    Id = 0.024 Ta + 0.11 (Ta - 177.3) H(Ta - 177.3)     (Ta: one-way delay in ms, H: step)

The effective equipment impairment (G.107 section 3.6) with packet loss Ppl (%) and burst
ratio BurstR (1 for random loss; mean observed burst length over the random expectation):

    Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)

and R converts to MOS (G.107 Annex B): MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R) for
0 < R < 100 (1 below, 4.5 above). The codec's Ie and Bpl come from ITU-T G.113 Appendix I where
it lists them (G.711 with packet loss concealment: Ie 0, Bpl 25.1). G.113 lists no values for
Opus: callbot assumes Ie 0 and Bpl 20 (wideband Opus with its own concealment, on the
narrowband scale), an assumption, stated as one in the report (`codec_values`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Ro - Is with G.107 default parameters.
R_DEFAULT = 93.2
#: (Ie, Bpl, algorithmic delay in ms) per codec name as SDP spells it.
CODECS: dict[str, tuple[float, float, float]] = {
    "opus": (0.0, 20.0, 6.5),
    "pcmu": (0.0, 25.1, 0.0),
    "pcma": (0.0, 25.1, 0.0),
    "g711": (0.0, 25.1, 0.0),  # PCMU or PCMA (a SIP call's stack does not say which)
    "g722": (0.0, 25.1, 1.5),
}
#: Frame length the media clock sends (ms): a packet's worth of delay before it leaves.
FRAME_MS = 20.0


@dataclass(frozen=True)
class Grade:
    """One direction's estimate: R, MOS and the inputs that gave it."""

    r: float
    mos: float
    loss_percent: float
    burst_ratio: float
    delay_ms: float
    codec: str

    def as_dict(self) -> dict[str, object]:
        ie, bpl, _ = codec_values(self.codec)
        return {
            "mos": round(self.mos, 2),
            "r": round(self.r, 1),
            "loss_percent": round(self.loss_percent, 2),
            "burst_ratio": round(self.burst_ratio, 2),
            "delay_ms": round(self.delay_ms, 1),
            "codec": self.codec,
            "codec_values": {"ie": ie, "bpl": bpl, "source": _source(self.codec)},
        }


def codec_values(codec: str) -> tuple[float, float, float]:
    """(Ie, Bpl, algorithmic delay ms) for a codec name; unknown codecs are taken as Opus."""
    return CODECS.get(codec.lower(), CODECS["opus"])


def _source(codec: str) -> str:
    listed = codec.lower() in ("pcmu", "pcma", "g711", "g722")
    return "ITU-T G.113 Appendix I" if listed else "assumed"


def delay_impairment(delay_ms: float) -> float:
    """Id for a one-way delay (Cole and Rosenbluth's fit to G.107)."""
    return 0.024 * delay_ms + (0.11 * (delay_ms - 177.3) if delay_ms > 177.3 else 0.0)


def effective_equipment(ie: float, bpl: float, loss_percent: float, burst_ratio: float) -> float:
    """Ie_eff (G.107 formula 7-29)."""
    if loss_percent <= 0:
        return ie
    return ie + (95 - ie) * loss_percent / (loss_percent / max(burst_ratio, 1.0) + bpl)


def r_to_mos(r: float) -> float:
    """G.107 Annex B: the rating factor R as an estimated mean opinion score."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def grade(
    codec: str, loss_percent: float, burst_ratio: float, rtt_ms: float, jitter_ms: float
) -> Grade:
    """Estimate one direction. The one-way delay Ta is half the round trip, one frame of
    packetisation, the codec's look-ahead and a jitter buffer of twice the interarrival
    jitter (RFC 3550)."""
    ie, bpl, lookahead = codec_values(codec)
    delay = rtt_ms / 2 + FRAME_MS + lookahead + 2 * jitter_ms
    r = R_DEFAULT - delay_impairment(delay) - effective_equipment(ie, bpl, loss_percent,
                                                                  burst_ratio)  # fmt: skip
    return Grade(r, r_to_mos(r), loss_percent, burst_ratio, delay, codec.lower())


def burst_ratio(loss_share: float, mean_burst: float) -> float:
    """G.107's BurstR: the mean observed loss run over the mean run random loss would give
    (1 / (1 - p)); 1 when nothing was lost."""
    if loss_share <= 0 or mean_burst <= 0:
        return 1.0
    return max(1.0, mean_burst * (1 - loss_share))
