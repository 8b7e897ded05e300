"""samples/ci runs as its README says (`python -m pytest samples/ci` from the repository)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_ci_sample_passes(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "samples/ci", "-q", "-p", "no:cacheprovider",
         "--basetemp", str(tmp_path / "base")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert not (ROOT / "recordings").exists() or not any(
        p.stat().st_mtime > tmp_path.stat().st_mtime for p in (ROOT / "recordings").iterdir()
    )  # the greeter recorded into the test's tmp_path, not the repository
