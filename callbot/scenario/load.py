"""Scenarios from a YAML file or from `--step` strings: the same `Step` objects either way.

    # smoke.yaml: paths are relative to this file
    impair: loss=5%,burst=3
    steps:
      - wait-for speech within 5s
      - dtmf 1
      - expect speech 'info' within 8s

Every step is parsed before dialling; an error names the file and line (`smoke.yaml:4`) or the
`--step` number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .impair import Impairment
from .steps import ScenarioError, Step, parse_step

#: Keys a scenario file may have besides `steps`.
SETTINGS = ("impair", "video", "name")


@dataclass(frozen=True)
class Scenario:
    """Steps to run on a call, with the network impairment to apply (if any)."""

    steps: tuple[Step, ...]
    impair: Impairment | None = None
    video: bool = False
    name: str = "scenario"
    source: str | None = None

    @property
    def wants_video(self) -> bool:
        """Whether the call must offer video (a step sends or expects it)."""
        kinds = {s.kind for s in self.steps}
        return self.video or bool(kinds & {"play-video", "expect video-frames"})

    def with_steps(self, more: Sequence[Step]) -> Scenario:
        """This scenario with `more` steps after its own (`--scenario` then `--step`)."""
        return replace(self, steps=(*self.steps, *more))

    def impaired(self, impair: Impairment | None) -> Scenario:
        """This scenario under another impairment (`--impair` over the file's)."""
        return replace(self, impair=impair)


def from_strings(
    texts: Sequence[str], base: Path | None = None, impair: Impairment | None = None
) -> Scenario:
    """A scenario of inline steps (`--step "..."`), numbered `--step 1`, `--step 2`..."""
    steps = tuple(parse_step(t, f"--step {n}", base) for n, t in enumerate(texts, 1))
    return Scenario(steps, impair, source="--step")


def load(path: str | Path) -> Scenario:
    """Read and check a scenario file (ScenarioError naming the line on any problem)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read ({exc})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path}: not YAML ({_one_line(exc)})") from None
    if isinstance(root, yaml.SequenceNode):  # a bare list of steps
        root = yaml.MappingNode(
            "tag:yaml.org,2002:map",
            [(yaml.ScalarNode("tag:yaml.org,2002:str", "steps"), root)],
            root.start_mark,
        )
    if not isinstance(root, yaml.MappingNode):
        raise ScenarioError(f"{path}: expected a mapping with `steps:` (or a list of steps)")
    settings: dict[str, Any] = {}
    steps: list[Step] = []
    for key_node, value_node in root.value:
        key = key_node.value
        where = f"{path}:{key_node.start_mark.line + 1}"
        if key == "steps":
            steps = _steps(path, value_node)
        elif key in SETTINGS and isinstance(value_node, yaml.ScalarNode):
            settings[key] = (value_node.value, where)
        else:
            known = ", ".join(("steps", *SETTINGS))
            raise ScenarioError(f"{where}: unknown setting {key!r} (known: {known})")
    if not steps:
        raise ScenarioError(f"{path}: no steps")
    impair = None
    if "impair" in settings:
        value, where = settings["impair"]
        try:
            impair = Impairment.parse(value)
        except ValueError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
    video = settings.get("video", ("false", ""))[0].lower() in ("true", "yes", "on", "1")
    name = settings.get("name", (path.stem, ""))[0]
    return Scenario(tuple(steps), impair, video, name, str(path))


def _steps(path: Path, node: yaml.Node) -> list[Step]:
    if not isinstance(node, yaml.SequenceNode):
        raise ScenarioError(f"{path}:{node.start_mark.line + 1}: `steps` must be a list")
    steps = []
    for item in node.value:
        where = f"{path}:{item.start_mark.line + 1}"
        if not isinstance(item, yaml.ScalarNode):
            raise ScenarioError(f"{where}: a step is one line of text, e.g. `- dtmf 1`")
        steps.append(parse_step(item.value, where, path.parent))
    return steps


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
