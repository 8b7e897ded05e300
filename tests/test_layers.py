"""The test layers and their tooling: markers are declared and applied by directory, file and
fixture (conftest.py), the quick run README documents selects fewer tests, `eventually()`
says what it waited for, and `direct_call()` hangs up both calls even when a test fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import direct_call, eventually

ROOT = Path(__file__).resolve().parents[1]
#: Where each marker must come from (tests/conftest.py); nothing elsewhere carries it.
LAYERS = {
    "browser": ("tests/web/",),
    "janus": ("tests/group/",),
    "turn": ("tests/test_turn.py",),
    "sip": ("tests/sip/", "tests/test_sip"),
    "slow": ("tests/test_soak.py",),
}
#: A plugin for the collecting subprocess: one line per test with the layer markers it got.
REPORTER = """
def pytest_collection_finish(session):
    for item in session.items:
        names = sorted({m.name for m in item.iter_markers()} & {%s})
        print("LAYERS", item.nodeid, ",".join(names))
"""


def _collect(plugins: Path, *args: str) -> dict[str, set[str]]:
    """Each test `pytest --collect-only` selects with `args`, with its layer markers."""
    (plugins / "layer_report.py").write_text(REPORTER % ", ".join(map(repr, LAYERS)))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "--strict-markers",
         "-p", "no:cacheprovider", "-p", "layer_report", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line.removeprefix("LAYERS ") for line in result.stdout.splitlines()
             if line.startswith("LAYERS ")]  # fmt: skip
    pairs = [line.rsplit(" ", 1) for line in lines]
    return {node: set(filter(None, names.split(","))) for node, names in pairs}


def test_markers_follow_the_layers_and_the_documented_quick_run_selects_fewer(
    tmp_path: Path,
) -> None:
    everything = _collect(tmp_path)
    for marker, places in LAYERS.items():
        marked = {node for node, markers in everything.items() if marker in markers}
        assert marked, f"no test is marked {marker}"
        assert all(node.startswith(places) for node in marked), (marker, sorted(marked)[:5])
        unmarked = {node for node in everything if node.startswith(places)} - marked
        assert not unmarked, (marker, sorted(unmarked)[:5])
    documented = re.findall(r'python -m pytest -m "([^"]+)"', (ROOT / "README.md").read_text())
    assert documented, "README documents no marker expression"
    for expression in documented:
        quick = _collect(tmp_path, "-m", expression)
        assert 0 < len(quick) < len(everything), (expression, len(quick), len(everything))


async def test_eventually_returns_the_value_and_awaits_async_probes() -> None:
    values = iter(range(100))
    assert await eventually(lambda: next(values), until=lambda n: n >= 3, interval=0) == 3

    async def status() -> str:
        return "ready"

    assert await eventually(status) == "ready"


async def test_eventually_fails_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the count; last value: 2$"):
        await eventually(lambda: 2, "the count", until=lambda n: n > 5, timeout=0.1)
    with pytest.raises(AssertionError, match=r"eventually\(lambda: \[\]"):
        await eventually(lambda: [], timeout=0.1)  # no name: the line that asked says what


async def test_direct_call_hangs_up_both_calls_when_the_body_fails() -> None:
    with pytest.raises(RuntimeError, match="test failed"):
        async with direct_call() as (caller, callee):
            raise RuntimeError("test failed")
    assert await callee.wait_ended(5) is not None
    assert caller.state == callee.state == "ended"
