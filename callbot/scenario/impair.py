"""Network impairment on the caller's own media: loss (random or in bursts), delay, jitter.

`--impair loss=5%,burst=3,jitter=30ms,delay=80ms` applies to every RTP and RTCP datagram the
caller sends and receives, where it leaves and arrives (the ICE socket; see
`callbot._compat.ice.wrap_datagrams`), so both the far side and the caller's own receiver
see a bad network. ICE, DTLS and the data channel pass untouched (a lost handshake would test
the handshake, not the media).

Loss follows the Gilbert-Elliott two-state model: `loss` is the long-run share of packets
lost and `burst` the mean number lost in a row (1 = independent losses). Each packet is held
for `delay` plus a uniform random `±jitter` (never less than 0), so jitter reorders packets
as a real network does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .steps import parse_duration

_KEYS = ("loss", "burst", "jitter", "delay")


@dataclass(frozen=True)
class Impairment:
    """Loss share (0-1), mean burst length (packets), jitter and delay (seconds)."""

    loss: float = 0.0
    burst: float = 1.0
    jitter: float = 0.0
    delay: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Impairment:
        """`loss=5%,burst=3,jitter=30ms,delay=80ms` (any subset); ValueError otherwise."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            key = key.strip().lower()
            if key not in _KEYS or not value:
                raise ValueError(f"{part!r} is not one of {', '.join(k + '=' for k in _KEYS)}")
            values[key] = _value(key, value.strip())
        if not values:
            raise ValueError("an impairment needs loss=, burst=, jitter= or delay=")
        return cls(**values)

    def __str__(self) -> str:
        return (
            f"loss={self.loss:.1%},burst={self.burst:g},jitter={self.jitter * 1000:g}ms,"
            f"delay={self.delay * 1000:g}ms"
        )

    def as_dict(self) -> dict[str, float]:
        return {
            "loss": self.loss,
            "burst": self.burst,
            "jitter_ms": self.jitter * 1000,
            "delay_ms": self.delay * 1000,
        }


def _value(key: str, text: str) -> float:
    if key == "loss":
        share = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        if not 0 <= share < 1:
            raise ValueError(f"loss={text} is not between 0% and 100%")
        return share
    if key == "burst":
        length = float(text)
        if length < 1:
            raise ValueError(f"burst={text}: a burst is at least 1 packet")
        return length
    seconds = parse_duration(text)
    if seconds > 10:
        raise ValueError(f"{key}={text} is over 10 s")
    return seconds


class LossModel:
    """Gilbert-Elliott loss: in the bad state every packet is lost. From good to bad with
    probability p = loss / (burst * (1 - loss)), back with r = 1 / burst, so the long-run loss
    is p / (p + r) = `loss` and bad runs last `burst` packets on average."""

    def __init__(self, loss: float, burst: float, rng: random.Random) -> None:
        self._rng = rng
        self._r = 1.0 / burst
        self._p = loss / (burst * (1.0 - loss)) if loss > 0 else 0.0
        self._bad = False

    def lost(self) -> bool:
        if self._bad:
            self._bad = self._rng.random() >= self._r
        else:
            self._bad = self._rng.random() < self._p
        return self._bad


class Direction:
    """One direction's impairment: drops or delays each media datagram, then passes it on."""

    def __init__(self, impairment: Impairment, seed: int | None = None) -> None:
        self.impairment = impairment
        self._rng = random.Random(seed)
        self._loss = LossModel(impairment.loss, impairment.burst, self._rng)
        self.passed = 0
        self.dropped = 0

    def __call__(self, data: bytes, deliver: Callable[[], Any]) -> None:
        """Drop `data`, deliver it now, or deliver it after the delay (RTP/RTCP only)."""
        if not is_rtp_or_rtcp(data):
            deliver()
            return
        if self._loss.lost():
            self.dropped += 1
            return
        self.passed += 1
        wait = self.impairment.delay
        if self.impairment.jitter:
            wait += self._rng.uniform(-self.impairment.jitter, self.impairment.jitter)
        if wait <= 0:
            deliver()
        else:
            asyncio.get_running_loop().call_later(wait, deliver)


def is_rtp_or_rtcp(data: bytes) -> bool:
    """RTP and RTCP start with 128-191 (RFC 7983 demultiplexing; STUN and DTLS do not)."""
    return len(data) >= 12 and 127 < data[0] < 192
