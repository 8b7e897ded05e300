"""Media engine: file sources, outgoing tracks, incoming sinks and recorders, analysis."""

from .playback import Playback
from .recorder import Recording, TrackRecorder, recording_name

__all__ = ["Playback", "Recording", "TrackRecorder", "recording_name"]
