"""Voice activity detection: which 20 ms frames of received audio hold speech (webrtcvad).

WebRTC's VAD adapts to the background over its first frames and calls the first ~100 ms of any
noise speech. Each detector is therefore primed with `WARMUP` seconds of faint noise (-60 dBFS)
before the first real frame: measured on the spike's phrases, that removes every false start
on a noisy lead-in and still catches speech that begins with the very first frame.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from .asr import MODEL_RATE, VoiceUnavailable

FRAME_SECONDS = 0.02
FRAME_SAMPLES = int(MODEL_RATE * FRAME_SECONDS)
WARMUP = 0.3
#: 0 (least) to 3 (most aggressive in calling frames non-speech).
AGGRESSIVENESS = 3


def _webrtcvad() -> Any:
    """The webrtcvad module (from `webrtcvad-wheels`), or `VoiceUnavailable` naming the extra."""
    try:
        return importlib.import_module("webrtcvad")
    except ImportError:
        raise VoiceUnavailable("webrtcvad-wheels", "voice", "voice activity detection") from None


class FrameVad:
    """Classifies consecutive 20 ms frames of 16 kHz int16 mono audio as voiced or not."""

    def __init__(self, aggressiveness: int = AGGRESSIVENESS) -> None:
        self._vad = _webrtcvad().Vad(aggressiveness)
        noise = np.random.default_rng(1).normal(0, 30, round(WARMUP * MODEL_RATE))
        primer = noise.astype(np.int16)
        for start in range(0, len(primer) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            self._vad.is_speech(primer[start : start + FRAME_SAMPLES].tobytes(), MODEL_RATE)

    def voiced(self, frame: np.ndarray) -> bool:
        """Whether `frame` (exactly `FRAME_SAMPLES` samples) holds speech."""
        return bool(self._vad.is_speech(frame.tobytes(), MODEL_RATE))
