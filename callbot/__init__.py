"""callbot: headless WebRTC media bots: answer and place calls, play files, record replies.

Every public name is imported on first use (PEP 562 `__getattr__`): `import callbot` stays cheap
for the CLI and for tools that only need a submodule, and `from callbot import Bot` loads what
Bot needs. The full reference is docs/reference.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bot import Bot, Incoming, Subscription
    from .call import Call, RejectReason
    from .config import CallConfig
    from .errors import CallbotError, CallError, InvalidStateError, MediaError
    from .group import GroupInvite, JanusError, Participant, Room
    from .ice import IceConfig
    from .identity import AuthError, IdentityError, IdentityKey, KnownPeers
    from .media import Playback, Recording, TrackRecorder, recording_name
    from .media.tracks import MediaSource
    from .plugins import PluginError
    from .settings import Settings, SettingsError
    from .signaling.client import SignalingError

#: public name -> the submodule defining it.
_EXPORTS = {
    "Bot": ".bot",
    "Incoming": ".bot",
    "Subscription": ".bot",
    "Call": ".call",
    "RejectReason": ".call",
    "CallConfig": ".config",
    "IceConfig": ".ice",
    "Playback": ".media",
    "Recording": ".media",
    "TrackRecorder": ".media",
    "recording_name": ".media",
    "MediaSource": ".media.tracks",
    "GroupInvite": ".group",
    "Participant": ".group",
    "Room": ".group",
    "IdentityKey": ".identity",
    "KnownPeers": ".identity",
    "CallbotError": ".errors",
    "CallError": ".errors",
    "InvalidStateError": ".errors",
    "MediaError": ".errors",
    "AuthError": ".identity",
    "IdentityError": ".identity",
    "JanusError": ".group",
    "PluginError": ".plugins",
    "Settings": ".settings",
    "SettingsError": ".settings",
    "SignalingError": ".signaling.client",
}

__all__ = [
    "AuthError",
    "Bot",
    "Call",
    "CallConfig",
    "CallError",
    "CallbotError",
    "GroupInvite",
    "IceConfig",
    "IdentityError",
    "IdentityKey",
    "Incoming",
    "InvalidStateError",
    "JanusError",
    "KnownPeers",
    "MediaError",
    "MediaSource",
    "Participant",
    "Playback",
    "PluginError",
    "Recording",
    "RejectReason",
    "Room",
    "Settings",
    "SettingsError",
    "SignalingError",
    "Subscription",
    "TrackRecorder",
    "recording_name",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the submodule defining `name` on first access and cache the value."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
