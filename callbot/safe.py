"""Remote strings made safe to print: on a terminal, in a log line, in XML.

Whatever a peer or a relay sends (hang-up reasons, ids, error texts, metadata) may hold line
breaks that forge log lines or CI workflow commands (`::error ...` at the start of a line),
terminal escape sequences, or characters XML 1.0 forbids (https://www.w3.org/TR/xml/#charsets).
`printable` escapes every such character the way Python's `repr` does and cuts the length.
"""

from __future__ import annotations

import logging

#: Default length limit for one remote value.
LIMIT = 200
_CUT = "…"


def _escape(char: str) -> str:
    """`\\n`, `\\x1b`, `\\u202e`: the visible form of a character that must not be printed."""
    return repr(char)[1:-1]


def printable(value: object, limit: int | None = LIMIT) -> str:
    """`value` as one line of printable text: control, format (bidi), separator, surrogate and
    unassigned characters are escaped (`\\n`, `\\x1b`, `\\u2028`...), and the result is cut to
    `limit` characters (marked with `…`) unless `limit` is None."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)] + _CUT
    return text


class EscapeMessage(logging.Filter):
    """Makes a record's message one printable line before any handler sees it (tracebacks
    are formatted later and keep their lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: the handler reports it, not the caller
            return True
        if not message.isprintable():
            record.msg, record.args = printable(message, limit=None), None
        return True


_ESCAPE_MESSAGE = EscapeMessage()


def get_logger(name: str) -> logging.Logger:
    """`logging.getLogger(name)` for callbot's own modules: what they log is escaped where it
    is logged, so a remote string in it cannot forge a line whatever handler or formatter the
    application installed (the CLI's `SafeFormatter` also covers other libraries' records)."""
    logger = logging.getLogger(name)
    if _ESCAPE_MESSAGE not in logger.filters:
        logger.addFilter(_ESCAPE_MESSAGE)
    return logger


class SafeFormatter(logging.Formatter):
    """A log formatter whose message part is always one printable line, so a remote string
    logged anywhere (ours, a plugin's, a library's) cannot forge a log line; tracebacks keep
    their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message, limit=None)
        return super().formatMessage(record)
