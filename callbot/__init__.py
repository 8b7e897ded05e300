"""callbot: headless WebRTC media bots: answer and place calls, play files, record replies."""

from .bot import Bot, Incoming, Subscription
from .call import Call
from .config import CallConfig
from .errors import CallbotError, CallError, InvalidStateError, MediaError
from .group import GroupInvite, JanusError, Participant, Room
from .ice import IceConfig
from .media import Playback, Recording, TrackRecorder, recording_name

__all__ = [
    "Bot",
    "Call",
    "CallConfig",
    "CallError",
    "CallbotError",
    "GroupInvite",
    "IceConfig",
    "Incoming",
    "InvalidStateError",
    "JanusError",
    "MediaError",
    "Participant",
    "Playback",
    "Recording",
    "Room",
    "Subscription",
    "TrackRecorder",
    "recording_name",
]
__version__ = "0.1.0"
