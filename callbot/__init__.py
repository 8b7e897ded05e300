"""callbot: headless WebRTC media bots: answer and place calls, play files, record replies."""

from .bot import Bot, Incoming, Subscription
from .call import Call
from .config import CallConfig
from .errors import CallbotError, CallError, InvalidStateError, MediaError
from .ice import IceConfig
from .media import Playback, Recording, TrackRecorder

__all__ = [
    "Bot",
    "Call",
    "CallConfig",
    "CallError",
    "CallbotError",
    "IceConfig",
    "Incoming",
    "InvalidStateError",
    "MediaError",
    "Playback",
    "Recording",
    "Subscription",
    "TrackRecorder",
]
__version__ = "0.1.0"
