"""What a bot takes from its command line or environment, resolved once at the edge.

The edges are the CLI (`callbot run`, `callbot call`: click reads the flags and their
environment variables), the `Bot` constructor (arguments first, then `Settings.from_env`) and the
pytest plugin. Below them, settings travel as arguments and `CallConfig`s: no other module
reads `os.environ`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import CallbotError

#: Environment variable of each setting (docs/reference.md lists them).
ENV = {
    "server": "CALLBOT_SERVER",
    "token": "CALLBOT_TOKEN",
    "identity": "CALLBOT_IDENTITY",
    "known_peers": "CALLBOT_KNOWN_PEERS",
    "require_signatures": "CALLBOT_REQUIRE_SIGNATURES",
    "trust_on_first_use": "CALLBOT_TRUST_ON_FIRST_USE",
    "ice_addresses": "CALLBOT_ICE_ADDRESSES",
    "always_relay": "CALLBOT_ALWAYS_RELAY",
    "janus_url": "CALLBOT_JANUS_URL",
    "state_dir": "CALLBOT_STATE_DIR",
    "fastpath": "CALLBOT_FASTPATH",
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingsError(CallbotError, ValueError):
    """A setting is malformed, or two places give different values for it."""


def parse_flag(name: str, text: str) -> bool:
    """'1', 'true', 'yes', 'on' (any case) or their opposites; anything else is an error."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={text!r}: use 1/true/yes/on or 0/false/no/off")


def parse_addresses(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """ICE addresses from 'a,b' or a list: each must be an IP address (the error names it)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    addresses = tuple(item.strip() for item in items if item.strip())
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise SettingsError(f"ICE address {address!r} is not an IP address") from exc
    return addresses


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """$CALLBOT_STATE_DIR, else $XDG_STATE_HOME/callbot, else ~/.local/state/callbot."""
    if environ.get(ENV["state_dir"], "").strip():
        return Path(environ[ENV["state_dir"]].strip())
    base = environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "callbot"


@dataclass(frozen=True)
class Settings:
    """A bot's deployment settings. `None` (or False for flags, True for `fastpath`) is
    "not set": `over()` lets a set value win over another source's."""

    server: str | None = None
    token: str | None = None
    identity: str | None = None
    known_peers: str | None = None
    require_signatures: bool = False
    trust_on_first_use: bool = False
    ice_addresses: tuple[str, ...] | None = None
    always_relay: bool = False
    janus_url: str | None = None
    state_dir: Path | None = None
    fastpath: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings the environment gives (empty variables count as unset)."""
        raw = {name: environ.get(var, "").strip() for name, var in ENV.items()}
        given = {name: text for name, text in raw.items() if text}
        values: dict[str, Any] = {}
        for name, text in given.items():
            if name in ("require_signatures", "trust_on_first_use", "always_relay", "fastpath"):
                values[name] = parse_flag(ENV[name], text)
            elif name == "ice_addresses":
                values[name] = parse_addresses(text) or None
            elif name != "state_dir":
                values[name] = text
        return cls(**values, state_dir=default_state_dir(environ))

    def over(self, base: Settings) -> Settings:
        """These settings where set, `base`'s elsewhere."""
        unset = Settings()
        chosen = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(unset, f.name)
        }
        return replace(base, **chosen)

    def conflicts(self, other: Settings) -> list[str]:
        """Settings both give, with different values: 'name: ours vs theirs'."""
        unset = Settings()
        out = []
        for f in fields(self):
            mine, theirs, blank = (getattr(s, f.name) for s in (self, other, unset))
            if mine != blank and theirs != blank and mine != theirs:
                out.append(f"{f.name}: {mine!r} vs {theirs!r}")
        return out
