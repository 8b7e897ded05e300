"""The E-model (ITU-T G.107) figures and the Gilbert-Elliott loss model behave as documented."""

from __future__ import annotations

import random

import numpy as np
import pytest

from callbot.scenario import emodel
from callbot.scenario.grades import echo_delay, sip_grades
from callbot.scenario.impair import LossModel


def test_emodel_reference_points() -> None:
    assert emodel.r_to_mos(93.2) == pytest.approx(4.41, abs=0.01)  # G.107 default: 4.41
    assert emodel.r_to_mos(50) == pytest.approx(2.58, abs=0.01)
    assert emodel.r_to_mos(-5) == 1.0 and emodel.r_to_mos(120) == 4.5
    # G.711 with PLC, 2 % random loss: Ie_eff = 95 * 2 / (2 + 25.1) = 7.0
    assert emodel.effective_equipment(0, 25.1, 2.0, 1.0) == pytest.approx(7.01, abs=0.01)
    assert emodel.delay_impairment(100) == pytest.approx(2.4)
    assert emodel.delay_impairment(277.3) == pytest.approx(0.024 * 277.3 + 11.0)


def test_mos_falls_with_loss_bursts_and_delay() -> None:
    clean = emodel.grade("opus", 0, 1, rtt_ms=2, jitter_ms=1).mos
    lossy = emodel.grade("opus", 5, 1, rtt_ms=2, jitter_ms=1).mos
    bursty = emodel.grade("opus", 5, 3, rtt_ms=2, jitter_ms=1).mos
    late = emodel.grade("opus", 0, 1, rtt_ms=600, jitter_ms=1).mos
    assert clean > 4.3 > lossy > bursty
    assert late < clean - 0.3


@pytest.mark.parametrize(("loss", "burst"), [(0.05, 1.0), (0.05, 3.0), (0.2, 2.0)])
def test_gilbert_elliott_loss_and_burst_length(loss: float, burst: float) -> None:
    model = LossModel(loss, burst, random.Random(1))
    lost = [model.lost() for _ in range(200_000)]
    runs, run = [], 0
    for flag in [*lost, False]:
        if flag:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    assert np.mean(lost) == pytest.approx(loss, rel=0.1)
    assert np.mean(runs) == pytest.approx(burst, rel=0.1)


def test_echo_delay_finds_a_click_in_what_came_back() -> None:
    rng = np.random.default_rng(3)
    click = rng.standard_normal(4800) * 0.3
    heard = np.concatenate([np.zeros(3360), click * 0.5, np.zeros(9600)])  # 70 ms later
    heard += rng.standard_normal(heard.size) * 0.001
    delay, match = echo_delay(click, heard, 48000)
    assert delay == pytest.approx(0.070, abs=0.001) and match > 0.9
    assert echo_delay(click, np.zeros(100), 48000) is None


def test_sip_grades_come_from_the_stacks_rtcp_report_or_not_at_all() -> None:
    report = {"rx_packets": 950, "rx_lost": 50, "rx_jitter_ms": 4.0, "tx_packets": 1000,
              "tx_lost": 20, "tx_jitter_ms": 2.0, "rtt_ms": 10.0, "codec": "g711"}  # fmt: skip
    graded = sip_grades({**report, "rtcp_reports": 2}, None)
    received, sent = graded["received"], graded["sent"]
    assert received["loss_percent"] == 5.0 and sent["loss_percent"] == 2.0  # 50 of 1000 sent
    # G.711 (G.113 Appendix I): Ie 0, Bpl 25.1; random loss (the stack counts no runs)
    assert received["codec_values"] == {"ie": 0.0, "bpl": 25.1, "source": "ITU-T G.113 Appendix I"}
    assert received["burst_ratio"] == 1.0 and received["delay_ms"] == 5 + 20 + 8
    expected = emodel.grade("g711", 5.0, 1.0, 10.0, 4.0)
    assert received["mos"] == round(expected.mos, 2) and graded["mos"] == received["mos"]
    assert "dropouts" not in received and graded["rtt_ms"] == 10.0
    nothing = sip_grades({**report, "rtcp_reports": 0}, None)  # zeros, not measurements
    assert nothing == {"rtcp_reports": 0, "rtt_ms": None, "mouth_to_ear_ms": None, "mos": None}
