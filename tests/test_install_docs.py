"""docs/howto/ci.md installs callbot with a command that works: `python -m pip install ./callbot`
from a checkout (callbot is not on the package index), run here into a fresh virtualenv.

Offline, so two flags are added to the documented command: `--no-index` (nothing to download:
the dependencies are this environment's, made visible to the fresh venv by a .pth file, as
`--system-site-packages` would if this environment were not itself a venv) and
`--no-build-isolation` (the build backend is this environment's setuptools, not a download).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_DOC = ROOT / "docs" / "howto" / "ci.md"
#: What a checkout needs to install (copied: building writes build/ and *.egg-info into it).
SOURCES = ("pyproject.toml", "README.md", "callbot", "plugins")
DOCUMENTED = "python -m pip install ./callbot"


def _can_build_offline() -> bool:
    """setuptools builds wheels alone from 70.1; before that it needs the `wheel` package."""
    import setuptools

    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def test_the_ci_guide_installs_from_a_checkout() -> None:
    text = CI_DOC.read_text()
    commands = re.findall(r"python -m pip install (?:-q )?(\S+)", text)
    assert commands and set(commands) <= {"./callbot", "."}, commands
    assert DOCUMENTED in text


@pytest.mark.skipif(not _can_build_offline(), reason="needs `wheel` (in the test extras)")
def test_the_documented_install_works(tmp_path: Path) -> None:
    checkout = tmp_path / "callbot"
    checkout.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    documented = shlex.split(DOCUMENTED)
    install = [sys.executable, *documented[1:3], "--python", str(python), *documented[3:],
               "--no-index", "--no-build-isolation", "-q"]  # fmt: skip
    result = subprocess.run(install, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    where = subprocess.check_output(
        [python, "-c", "import callbot, callbot_plugins; print(callbot.__file__)"],
        text=True,
        cwd=venv,  # not this checkout's directory
    )
    assert where.startswith(str(site)), where  # the installed copy, not this checkout
    packages = {p.parent.relative_to(ROOT) for p in (ROOT / "callbot").rglob("__init__.py")}
    missing = sorted(str(p) for p in packages if not (site / p / "__init__.py").exists())
    assert missing == [], f"packages left out of the install (pyproject.toml): {missing}"
    tone = tmp_path / "a440.wav"
    made = subprocess.run([venv / "bin" / "callbot", "media", "tone", str(tone)], cwd=venv,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert made.returncode == 0 and tone.stat().st_size > 1000, made.stderr
