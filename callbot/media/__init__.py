"""Media engine: file sources, outgoing tracks, incoming sinks and recorders, analysis."""

from .playback import Playback
from .recorder import Recording, TrackRecorder

__all__ = ["Playback", "Recording", "TrackRecorder"]
