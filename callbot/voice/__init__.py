"""Offline speech for calls: recognition (pocketsphinx), voice activity (webrtcvad) and
synthesis (piper or espeak-ng). The only package that imports those engines; each is optional
and a missing one raises `VoiceUnavailable` naming the extra to install."""

from .asr import Recognizer, Transcript, VoiceUnavailable, grammar_jsgf
from .dialog import Answer, Utterance
from .listener import VoiceActivity
from .tts import SpeechError

__all__ = [
    "Answer",
    "Recognizer",
    "SpeechError",
    "Transcript",
    "Utterance",
    "VoiceActivity",
    "VoiceUnavailable",
    "grammar_jsgf",
]
