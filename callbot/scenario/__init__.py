"""Scripted calls for CI: a scenario is a list of steps run on one call (`callbot call PEER
--scenario smoke.yaml` or `--step "..."`, and `caller.run_scenario` in pytest), each with its
own verdict and timing, plus the call's grades (estimated MOS, dropouts, freezes, echo delay).

See docs/howto/scenarios.md for the step language.
"""

from __future__ import annotations

from .impair import Impairment
from .load import Scenario, from_strings, load
from .run import check_ready, check_sip, run_scenario
from .steps import ScenarioError, Step, parse_duration, parse_step

__all__ = [
    "Impairment",
    "Scenario",
    "ScenarioError",
    "Step",
    "check_ready",
    "check_sip",
    "from_strings",
    "load",
    "parse_duration",
    "parse_step",
    "run_scenario",
]
