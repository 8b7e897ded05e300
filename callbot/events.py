"""The event emitter behind `Call` and `Bot`: pyee's, with handler failures routed, not raised."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from pyee.asyncio import AsyncIOEventEmitter

from .safe import get_logger

logger = get_logger(__name__)


class Emitter(AsyncIOEventEmitter):
    """`on(event, handler)` / `@obj.on(event)` / `off(event, handler)`, sync or async handlers.

    A handler that raises (or an async handler that fails) never propagates into the code that
    emitted the event: the failure goes to `_handler_failed`, which subclasses override (a call
    ends itself with reason "error"). An `error` event nobody listens to is logged, not raised.
    """

    def _emit_run(self, f: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            result = f(*args, **kwargs)
        except Exception as exc:
            self._handler_failed(exc)
            return
        if asyncio.iscoroutine(result):
            self._start_handler(result)

    def _start_handler(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an async handler; `Call` and `Bot` run it in their task group instead."""
        task = asyncio.ensure_future(coro)
        self._waiting.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        self._waiting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._handler_failed(task.exception())  # type: ignore[arg-type]

    def _emit_handle_potential_error(self, event: str, error: Any) -> None:
        if event == "error":
            logger.warning("%r: unhandled error event: %s", self, error)

    def _handler_failed(self, exc: BaseException) -> None:
        logger.error("%r: event handler failed", self, exc_info=exc)

    def off(self, event: str, handler: Callable[..., Any] | None = None) -> None:
        """Remove `handler` from `event` (a no-op if it is not registered), or, without a handler,
        every handler of `event` the application added.

        Handlers defined inside the `callbot` package (its own bookkeeping, e.g. the bot
        forgetting an ended call) survive `off(event)`: removing them would break the library.
        """
        if handler is not None:
            with contextlib.suppress(KeyError):
                self.remove_listener(event, handler)
            return
        for listener in list(self._events.get(event, ())):
            if not _is_internal(listener):
                self.remove_listener(event, listener)


def _is_internal(handler: Callable[..., Any]) -> bool:
    """Whether `handler` was defined by callbot itself (not by an application or plugin)."""
    module = getattr(handler, "__module__", None) or ""
    return module == "callbot" or module.startswith("callbot.")
