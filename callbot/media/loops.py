"""Seamless loops of encoded prompts: one period of Opus packets that can repeat forever.

Replaying a file's packets from the top would click at every seam: the encoder primed on
silence at the start and padded the end, and a pass that is not a whole number of 20 ms frames
shifts the packet grid. So a loop gets its own encoding: the file repeated until its length
and the 20 ms grid line up again (one pass for most prompts: any whole number of 20 ms), the
encoder running on into the next period so that the packets at the seam carry the state of a
stream that never stopped. A file whose passes would take more than `MAX_CYCLE_SECONDS` to
line up is padded with silence to the next 20 ms instead (a seam of under 20 ms, logged).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from ..safe import get_logger
from .decoder import AUDIO_FORMAT, AUDIO_FRAME_SAMPLES, AUDIO_LAYOUT, AUDIO_RATE, FileDecoder
from .opus import OpusEncoder

logger = get_logger(__name__)

#: Longest loop period (all passes until the seam falls on the 20 ms grid) encoded seamlessly.
MAX_CYCLE_SECONDS = 300.0
#: Frames encoded past the period end and reused at the seam: enough for the encoder's state
#: (its 6.5 ms lookahead and its predictors) to be that of a running stream.
SETTLE_FRAMES = 5


def encode_cycle(
    path: Path, pass_samples: int, stream: list[bytes] | None = None
) -> tuple[list[bytes], int]:
    """One loop period of Opus payloads for `path`, whose passes are `pass_samples` long, and
    the samples each pass takes in the loop (more than `pass_samples` when padded).

    `stream`, if given, receives each packet of the looping stream as soon as it is encoded:
    a playback that reaches the first seam before the whole period is encoded (a long period,
    a loaded machine) plays on from it instead of waiting in silence."""
    frames, passes = _period(pass_samples)
    if passes == 0:
        logger.warning(
            "loop of %s: %d samples (48 kHz) per pass is not a multiple of 20 ms and the passes "
            "would take too long to line up; each seam gets under 20 ms of silence (trim or "
            "pad the file to a multiple of 20 ms for a seamless loop)",
            path,
            pass_samples,
        )
    padded = frames * AUDIO_FRAME_SAMPLES if passes == 0 else pass_samples
    # the packet for period position i is taken from the first time the stream passes i after
    # SETTLE_FRAMES frames: by then the encoder runs as it would in a stream that never stopped
    chosen = [i + frames * -(-max(0, SETTLE_FRAMES - i) // frames) for i in range(frames)]
    last = max(chosen)
    encoder = OpusEncoder()
    packets: list[bytes] = [] if stream is None else stream
    for frame in _frames(_passes(path, pass_samples, padded)):
        packets += encoder.encode(frame)
        if len(packets) > last:
            break
    return [packets[index] for index in chosen], padded


def _period(pass_samples: int) -> tuple[int, int]:
    """(frames per period, passes per period); passes is 0 when the seam is padded instead."""
    passes = AUDIO_FRAME_SAMPLES // math.gcd(pass_samples, AUDIO_FRAME_SAMPLES)
    if passes * pass_samples <= MAX_CYCLE_SECONDS * AUDIO_RATE:
        return passes * pass_samples // AUDIO_FRAME_SAMPLES, passes
    return -(-pass_samples // AUDIO_FRAME_SAMPLES), 0


def _passes(path: Path, pass_samples: int, padded: int) -> Iterator[np.ndarray]:
    """The file's audio, pass after pass, each cut or padded to exactly `padded` samples
    (interleaved stereo s16)."""
    while True:
        decoder = FileDecoder(path, audio=True)
        try:
            left = pass_samples
            while left > 0 and not decoder.finished:
                for frame in decoder.read(1.0).audio:
                    take = min(left, frame.samples)
                    if take > 0:
                        yield frame.to_ndarray().reshape(-1)[: take * 2]
                    left -= take
        finally:
            decoder.close()
        if padded - pass_samples + max(left, 0) > 0:
            yield np.zeros((padded - pass_samples + max(left, 0)) * 2, np.int16)


def _frames(samples: Iterator[np.ndarray]) -> Iterator[av.AudioFrame]:
    """20 ms frames cut from a stream of interleaved stereo samples."""
    size = AUDIO_FRAME_SAMPLES * 2
    buffer = np.zeros(0, np.int16)
    for block in samples:
        buffer = np.concatenate([buffer, block])
        while buffer.size >= size:
            frame = av.AudioFrame.from_ndarray(
                buffer[:size].reshape(1, -1), format=AUDIO_FORMAT, layout=AUDIO_LAYOUT
            )
            frame.sample_rate = AUDIO_RATE
            buffer = buffer[size:]
            yield frame
