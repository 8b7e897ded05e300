"""The public error hierarchy: everything callbot raises on purpose derives from `CallbotError`."""

from __future__ import annotations

import os


class CallbotError(Exception):
    """Base class of every error callbot raises deliberately."""


class MediaError(CallbotError):
    """A media file cannot be read, decoded or written; names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class CallError(CallbotError):
    """Something went wrong with one call; `code` is a short machine-readable tag."""

    def __init__(self, code: str, message: str, call_id: str | None = None) -> None:
        self.code = code
        self.call_id = call_id
        super().__init__(f"{code}: {message}")


class InvalidStateError(CallError):
    """The call is in a state where the requested operation makes no sense."""

    def __init__(self, message: str, call_id: str | None = None) -> None:
        super().__init__("invalid_state", message, call_id)


class SipError(CallbotError):
    """SIP could not be set up or used (stack missing, registrar refused us, bad address);
    `code` is a short machine-readable tag, the message one line for a person."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)
