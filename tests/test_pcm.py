"""PCM for legs whose stack encodes (SIP): a shared prompt's Opus payloads are decoded and
resampled once per output format, however many calls play them."""

from __future__ import annotations

import av
import numpy as np

from callbot.media import analysis, opus
from callbot.media.pcm import PcmCache, PcmLeg
from callbot.testing import generate


def tone_payloads(frequency: float, seconds: float) -> list[bytes]:
    samples = (generate.tone_samples(frequency, seconds, 48000) * 16000).astype(np.int16)
    stereo = np.repeat(samples, 2).reshape(1, -1)
    encoder, payloads = opus.OpusEncoder(), []
    for start in range(0, stereo.shape[1] - 1919, 1920):
        frame = av.AudioFrame.from_ndarray(stereo[:, start : start + 1920], format="s16",
                                           layout="stereo")  # fmt: skip
        frame.sample_rate = 48000
        payloads += encoder.encode(frame)
    return payloads


def test_a_prompt_is_decoded_once_per_format_for_every_call() -> None:
    payloads = tone_payloads(1000.0, 1.0)
    cache = PcmCache()
    calls = [PcmLeg(8000, 1, cache) for _ in range(3)]
    heard = [b"".join(leg.pcm(p) for p in payloads) for leg in calls]
    assert cache.decoded == len(payloads)
    assert heard[0] == heard[1] == heard[2]
    pcm = np.frombuffer(heard[0], dtype=np.int16)
    assert abs(len(pcm) - 8000) < 400  # one second at 8 kHz
    assert abs(analysis.dominant_frequency(pcm.astype(np.float32) / 32768, 8000) - 1000) < 15
    wide = PcmLeg(48000, 2, cache)
    stereo = b"".join(wide.pcm(p) for p in payloads)
    assert cache.decoded == 2 * len(payloads)  # a second format: decoded once more
    assert abs(len(stereo) // 4 - 48000) < 2000


def test_silence_and_frames_come_out_at_the_leg_format() -> None:
    leg = PcmLeg(8000, 1, PcmCache())
    assert leg.pcm(None) == bytes(320)  # 20 ms at 8 kHz mono
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1920), np.int16), format="s16",
                                       layout="stereo")  # fmt: skip
    frame.sample_rate = 48000
    out = b"".join(leg.pcm(frame) for _ in range(5))
    assert 1200 <= len(out) <= 1600  # ~100 ms at 8 kHz mono, less the resampler's delay
