"""Offline speech for calls: recognition (pocketsphinx), voice activity (webrtcvad) and
synthesis (piper or espeak-ng). The only package that imports those engines; each is optional
and a missing one raises `VoiceUnavailable` naming the extra to install."""

from .asr import (
    Recognizer,
    SpeechRecognizer,
    Transcript,
    VoiceUnavailable,
    grammar_jsgf,
    use_recognizer,
)
from .dialog import Answer, Utterance, prepare
from .listener import VoiceActivity
from .tts import SPEECH, Engine, SpeechError

__all__ = [
    "SPEECH",
    "Answer",
    "Engine",
    "Recognizer",
    "SpeechError",
    "SpeechRecognizer",
    "Transcript",
    "Utterance",
    "VoiceActivity",
    "VoiceUnavailable",
    "grammar_jsgf",
    "prepare",
    "use_recognizer",
]
