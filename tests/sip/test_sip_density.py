"""benchmarks/sip_density.py runs end to end on a small load (its figures are not asserted:
timing belongs to the benchmark, not to the tests), and its recording verdict fails a
recording with a gap."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from sip_media import tone

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

pytest.importorskip("baresip", reason="pip install 'callbot[sip]'")


def write(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def test_the_verdict_fails_a_recording_with_a_gap(tmp_path: Path) -> None:
    from sip_density import tone_everywhere

    whole = tone(440.0, 4.0, 8000)
    gapped = whole.copy()
    gapped[int(2.5 * 8000) : int(2.7 * 8000)] = 0.0  # 200 ms of nothing
    assert tone_everywhere(write(tmp_path / "whole.wav", whole), 440.0)
    assert not tone_everywhere(write(tmp_path / "gapped.wav", gapped), 440.0)
    assert not tone_everywhere(write(tmp_path / "other.wav", tone(600.0, 4.0, 8000)), 440.0)
    assert tone_everywhere(write(tmp_path / "window.wav", gapped), 440.0, start=0.5, seconds=1.5)


def test_the_benchmark_runs_a_small_load(
    tmp_path: Path, cli_env: dict[str, str], baresip_peer: object, sipp: object
) -> None:  # the fixtures skip when baresip or SIPp is missing
    out = tmp_path / "points.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "sip_density.py"), "--calls", "4",
               "--warmup", "1", "--seconds", "2", "--json", str(out)]  # fmt: skip
    result = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [point] = json.loads(out.read_text())
    assert point["calls"] == 4 and point["notes"] == [], point
    assert point["sipp_ok"] and point["reports"] == 4, point  # every call answered and reported
    assert point["cpu_total"] > 0 and point["recordings_ok"] > 0, point
