"""The per-call verdict of density.py: did this call get the bot's prompt, whole and on time?

Lateness and drift (judged over all calls by density.py) say nothing of a bot that sends only
silence, stops sending halfway through the window or stutters. So each call must also show,
over the measurement window:

- packets: at least the window's expected count (one per 20 ms) arrived, within `Limits`;
- arrival continuity: no stretch of the window, its edges included, went without packets;
- the prompt: every 0.1 s of the decoded audio (lost packets counting as silence) carries the
  prompt's tone at its level.

`check_call` is pure (measurements in, reasons out); `measure` turns what a call received into
those measurements, decoding its Opus packets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from callbot.media.analysis import frame_samples
from callbot.media.opus import FRAME_SAMPLES, RATE, OpusDecoder

PACKET_SECONDS = FRAME_SAMPLES / RATE
BLOCK_SECONDS = 0.1
#: Packets the window's edges may cut off (one at each end).
EDGE_PACKETS = 2


@dataclass(frozen=True)
class Limits:
    """How far a call may fall short and still count as served in real time."""

    missing_share: float = 0.01  # of the window's packets, beyond EDGE_PACKETS
    max_gap: float = 0.3  # s without any packet arriving
    max_tone_gap: float = 0.0  # s of consecutive 0.1 s blocks without the prompt's tone
    min_tone_db: float = -30.0  # the tone's level a block must reach (dBFS)


@dataclass(frozen=True)
class CallMeasurement:
    """What one call received from the bot over the window [start, end] (monotonic seconds)."""

    start: float
    end: float
    arrivals: Sequence[float]  # monotonic arrival time of each packet
    tone_db: Sequence[float]  # the prompt's tone level in each 0.1 s block of the window


def check_call(call: CallMeasurement, limits: Limits = Limits()) -> list[str]:
    """Why this call was not served in real time (an empty list: it was)."""
    reasons = []
    window = call.end - call.start
    expected = round(window / PACKET_SECONDS)
    allowed = EDGE_PACKETS + math.floor(expected * limits.missing_share)
    if len(call.arrivals) < expected - allowed:
        reasons.append(f"{len(call.arrivals)} packets of {expected} expected")
    edges = [call.start, *sorted(call.arrivals), call.end]
    gaps = np.diff(edges)
    if gaps.size and gaps.max() > limits.max_gap:
        at = edges[int(gaps.argmax())] - call.start
        reasons.append(f"no packet for {gaps.max():.2f} s from {at:.2f} s into the window")
    reasons += _tone_reasons(np.asarray(call.tone_db, float), limits)
    return reasons


def _tone_reasons(levels: np.ndarray, limits: Limits) -> list[str]:
    """The prompt's tone missing from the decoded audio, wholly or in places."""
    quiet = levels < limits.min_tone_db
    if not quiet.any():
        return []
    if quiet.all():
        return [f"no prompt tone (loudest block {levels.max(initial=-math.inf):.0f} dBFS)"]
    longest, run = 0, 0
    for is_quiet in quiet:
        run = run + 1 if is_quiet else 0
        longest = max(longest, run)
    if longest * BLOCK_SECONDS <= limits.max_tone_gap + 1e-9:
        return []
    first = int(np.argmax(quiet)) * BLOCK_SECONDS
    return [
        f"prompt tone missing in {int(quiet.sum())} of {quiet.size} blocks of "
        f"{BLOCK_SECONDS:g} s (longest {longest * BLOCK_SECONDS:.1f} s, first at {first:.1f} s)"
    ]


def measure(
    start: float,
    end: float,
    arrivals: Sequence[float],
    packets: Sequence[tuple[int, bytes]],
    frequency: float,
) -> CallMeasurement:
    """The measurements of one call: `packets` are its (48 kHz timestamp, Opus payload) pairs
    received during [start, end], in arrival order; decoded in timestamp order and laid out on
    the window from the first one, lost and missing packets as silence."""
    slots = round((end - start) / PACKET_SECONDS)
    audio = np.zeros(slots * FRAME_SAMPLES, np.float32)
    decoder = OpusDecoder()
    first = min((pts for pts, _ in packets), default=0)
    for pts, payload in sorted(packets, key=lambda p: p[0]):
        at = pts - first
        for frame in decoder.decode(payload, pts):
            samples = frame_samples(frame)[: max(0, len(audio) - at)]
            audio[at : at + len(samples)] = samples
    return CallMeasurement(start, end, list(arrivals), block_tone_db(audio, frequency))


def block_tone_db(samples: np.ndarray, frequency: float, rate: int = RATE) -> list[float]:
    """The level (dBFS) of the sine at `frequency` in each 0.1 s block of `samples`: one
    Hann-windowed DFT bin per block (as `callbot.media.analysis.tone_level_db`), vectorised."""
    size = round(BLOCK_SECONDS * rate)
    count = len(samples) // size
    if count == 0:
        return []
    blocks = samples[: count * size].astype(np.float64).reshape(count, size)
    window = np.hanning(size)
    basis = window * np.exp(-2j * np.pi * frequency / rate * np.arange(size))
    amplitude = 2 * np.abs(blocks @ basis) / window.sum()
    with np.errstate(divide="ignore"):
        return (20 * np.log10(amplitude / math.sqrt(2))).tolist()
