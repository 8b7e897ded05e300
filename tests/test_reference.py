"""docs/reference.md is complete: every public member of the API classes and every CLI command
and flag is named there, and every documented command's `--help` runs."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import callbot
from callbot.cli import main

REFERENCE = (Path(__file__).resolve().parents[1] / "docs" / "reference.md").read_text()
_FENCED = re.compile(r"^```.*?^```", re.S | re.M)
#: Every identifier written as code in the reference (inline `code` or a fenced block).
DOCUMENTED = set(
    re.findall(
        r"[A-Za-z_][A-Za-z0-9_]*",
        " ".join(
            [*_FENCED.findall(REFERENCE), *re.findall(r"`[^`]+`", _FENCED.sub("", REFERENCE))]
        ),
    )
)
CLASSES = ["Bot", "Incoming", "Subscription", "Call", "Playback", "Recording", "TrackRecorder",
           "CallConfig", "IceConfig", "Room", "Participant", "GroupInvite", "IdentityKey",
           "KnownPeers", "SipSettings", "SipCall"]  # fmt: skip


def _public_members(cls: type) -> set[str]:
    """Methods, properties and fields the class itself defines (not inherited from pyee)."""
    names = {name for name in vars(cls) if not name.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {field.name for field in dataclasses.fields(cls)}
    return names


@pytest.mark.parametrize("name", CLASSES)
def test_every_public_member_is_in_the_reference(name: str) -> None:
    cls = getattr(callbot, name)
    assert name in DOCUMENTED
    assert sorted(_public_members(cls) - DOCUMENTED) == []


def test_every_export_and_event_is_in_the_reference() -> None:
    assert sorted(set(callbot.__all__) - DOCUMENTED) == []
    events = ["state", "ringing", "connected", "track", "mediastatus", "held", "resumed", "dtmf",
              "data", "transfer", "transferred", "ended", "error", "call", "ready", "joined",
              "published", "unpublished", "left", "presence_list", "presence_update"]  # fmt: skip
    assert sorted(set(events) - DOCUMENTED) == []
    assert "off" in DOCUMENTED


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(group, click.Group):
        for name, command in group.commands.items():
            yield from _commands(command, (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def _section(path: tuple[str, ...]) -> str:
    """The part of the reference about `callbot PATH[0]` (the intro for the root)."""
    start = REFERENCE.index("## Command line")
    if path:
        start = REFERENCE.index(f"### callbot {path[0]}\n")
    end = REFERENCE.find("\n#", start + 4)
    return REFERENCE[start:end]


@pytest.mark.parametrize("path", list(_commands(main)), ids=lambda p: " ".join(p) or "callbot")
def test_every_command_and_flag_is_documented_and_its_help_runs(path: tuple[str, ...]) -> None:
    section = _section(path)
    assert f"callbot {' '.join(path)}".strip() in section
    flags = [o for p in _command(path).params for o in p.opts if o.startswith("--")]
    assert [flag for flag in flags if not re.search(rf"(?<![\w-]){flag}\b", section)] == []
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
