"""Finding plugins (by name, entry point or file path) and checking their options.

A spec is `NAME[:key=value,key=value]` or `PATH.py[:key=value,...]`. Options arrive as strings
from the command line and are converted to the types the plugin's `setup` declares; an unknown
or ill-typed option is a `PluginError` that lists what the plugin accepts.
"""

from __future__ import annotations

import importlib.util
import inspect
import types
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import CallbotError

ENTRY_POINT_GROUP = "callbot.plugins"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

PluginSetup = Callable[..., Any]


class PluginError(CallbotError):
    """A plugin cannot be found, loaded or configured."""


def available() -> dict[str, str]:
    """Installed plugins: name -> `module:function`."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`record:dir=out,video=false` -> ("record", {"dir": "out", "video": "false"})."""
    name, _, raw = spec.partition(":")
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise PluginError(f"plugin option {item!r} in {spec!r} is not key=value")
        options[key.strip()] = value.strip()
    if not name:
        raise PluginError(f"plugin spec {spec!r} has no name")
    return name, options


def load_plugin(ref: str | PluginSetup) -> PluginSetup:
    """The `setup` function behind a name, a `.py` path, or a callable given directly."""
    if callable(ref):
        return _checked(ref, getattr(ref, "__module__", repr(ref)))
    if ref.endswith(".py") or "/" in ref:
        return _from_file(Path(ref))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == ref:
            try:
                return _checked(ep.load(), ref)
            except ImportError as exc:
                raise PluginError(f"plugin {ref!r} ({ep.value}) failed to import: {exc}") from exc
    known = ", ".join(sorted(available())) or "none installed"
    raise PluginError(f"unknown plugin {ref!r} (known: {known}; or give a path to a .py file)")


def _from_file(path: Path) -> PluginSetup:
    if not path.is_file():
        raise PluginError(f"plugin file {path} not found")
    spec = importlib.util.spec_from_file_location(f"callbot_plugin_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin file {path} failed to load: {exc!r}") from exc
    setup = getattr(module, "setup", None)
    if setup is None:
        raise PluginError(f"plugin file {path} defines no setup(bot, **options) function")
    return _checked(setup, str(path))


def _checked(setup: Any, name: str) -> PluginSetup:
    if not callable(setup):
        raise PluginError(f"plugin {name}: setup is not callable")
    setup.__callbot_plugin_name__ = name
    return setup  # type: ignore[no-any-return]


def configure(setup: PluginSetup, options: dict[str, Any]) -> dict[str, Any]:
    """Check `options` against `setup(bot, ...)` and convert string values to their types."""
    name = getattr(setup, "__callbot_plugin_name__", getattr(setup, "__name__", "plugin"))
    parameters = list(inspect.signature(setup).parameters.values())[1:]  # after `bot`
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    named = {p.name: p for p in parameters if p.kind is not p.VAR_KEYWORD}
    try:
        hints = typing.get_type_hints(setup)
    except Exception:
        hints = {}
    listing = (
        ", ".join(
            f"{p.name}" + ("" if p.default is p.empty else f"={p.default}") for p in named.values()
        )
        or "none"
    )
    converted: dict[str, Any] = {}
    for key, value in options.items():
        if key not in named and not accepts_any:
            raise PluginError(f"plugin {name} has no option {key!r} (options: {listing})")
        target = hints.get(key)
        try:
            converted[key] = _convert(value, target) if isinstance(value, str) else value
        except ValueError as exc:
            raise PluginError(f"plugin {name}: option {key}={value!r}: {exc}") from None
    missing = [p.name for p in named.values() if p.default is p.empty and p.name not in converted]
    if missing:
        raise PluginError(
            f"plugin {name} needs option(s) {', '.join(missing)} (options: {listing})"
        )
    return converted


def _convert(value: str, target: Any) -> Any:
    if isinstance(target, types.UnionType) or typing.get_origin(target) is typing.Union:
        choices = [t for t in typing.get_args(target) if t is not type(None)]
        target = choices[0] if len(choices) == 1 else None
    if target is bool:
        lowered = value.lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ValueError("expected true or false")
    if target in (int, float):
        try:
            return target(value)
        except ValueError:
            raise ValueError(f"expected a number ({target.__name__})") from None
    if target is Path:
        return Path(value).expanduser()
    return value


def apply(bot: Any, spec: str | PluginSetup, options: dict[str, Any] | None = None) -> None:
    """Load a plugin, check its options and run its setup on `bot`."""
    if isinstance(spec, str):
        spec, parsed = parse_spec(spec)
        options = {**parsed, **(options or {})}
    setup = load_plugin(spec)
    setup(bot, **configure(setup, options or {}))
