"""Structured concurrency: a call, a room or a bot owns one `TaskScope`, an anyio task group (on
the asyncio backend aiortc needs) that holds every task spawned for it, so none outlives it.

Tasks are spawned from plain callbacks too (pyee events, aiortc state changes, timers), where no
`async with` can open a group: so the group lives in a host task of its own, started with the
first task and gone once the last one is done. `close()` is the owner's end: what still runs
gets a grace period to finish (a handler logging the end reason), then its cancel scope fires.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup

from . import watchdog
from .safe import get_logger

logger = get_logger(__name__)

#: Seconds the tasks of an ended call (or room, bot) get to finish before they are cancelled.
END_GRACE = 5.0

ErrorHandler = Callable[[Exception], None]


class TaskHandle:
    """One spawned task: `cancel()` it, or give it a deadline (loop time) to finish by."""

    def __init__(self, coro: Coroutine[Any, Any, Any], on_error: ErrorHandler | None) -> None:
        self.coro = coro
        self.on_error = on_error
        self.deadline = math.inf
        self.name = ""
        self._scope: anyio.CancelScope | None = None

    def cancel(self) -> None:
        """Cancel the task now (a no-op once it is done)."""
        self.limit(-math.inf)

    def limit(self, deadline: float) -> None:
        """Cancel the task at `deadline` (loop time) unless it finishes first."""
        self.deadline = min(self.deadline, deadline)
        if self._scope is not None:
            self._scope.deadline = self.deadline

    def bind(self, scope: anyio.CancelScope) -> None:
        """The cancel scope the task runs in (created in the task: anyio needs one to make it)."""
        self._scope = scope
        scope.deadline = self.deadline


class TaskScope:
    """The tasks of one owner, in one anyio task group; `close()` ends them (see module doc)."""

    def __init__(self, name: str, owner: str | None = None, grace: float = END_GRACE) -> None:
        self.name = name
        #: The scope whose group hosts this one (a bot's, for its calls): cancelling the
        #: parent's tasks cancels these too. Set before the first spawn.
        self.parent: TaskScope | None = None
        self._owner = owner  # the call id the watchdog names for these tasks
        self._grace = grace
        self._group: TaskGroup | None = None
        self._hosted = False  # a host task holds the group open
        self._host: asyncio.Task[None] | None = None  # that task, when it has no parent
        self._waiting: list[TaskHandle] = []
        self._handles: set[TaskHandle] = set()
        self._closed = False

    def spawn(
        self,
        coro: Coroutine[Any, Any, Any],
        on_error: ErrorHandler | None = None,
        name: str | None = None,
    ) -> TaskHandle:
        """Run `coro` in the group. Its exception goes to `on_error` (default: logged), never
        to the other tasks: the owner decides what a failure ends. Spawned after `close()`,
        it gets the grace period from now."""
        handle = TaskHandle(coro, on_error)
        if self._closed:
            handle.limit(asyncio.get_running_loop().time() + self._grace)
        self._handles.add(handle)
        # the watchdog names a task that holds the loop: say what it runs, not `_run`
        handle.name = f"{self.name}: {name or getattr(coro, '__qualname__', coro)}"
        if self._group is not None:
            try:
                self._group.start_soon(self._run, handle, name=handle.name)
                return handle
            except RuntimeError:  # the group is closing: the host starts a new one
                pass
        self._waiting.append(handle)
        if not self._hosted:
            self._start_host()
        return handle

    def close(self, now: bool = False) -> None:
        """The owner ended: its running tasks are cancelled after the grace period (at once
        when `now`); tasks spawned later get the grace period from their start."""
        self._closed = True
        deadline = -math.inf if now else asyncio.get_running_loop().time() + self._grace
        for handle in list(self._handles):
            handle.limit(deadline)

    def cancel(self) -> None:
        """Cancel every running task now; the scope stays open for new ones (a bot stopped
        may start again)."""
        for handle in list(self._handles):
            handle.cancel()

    def _start_host(self) -> None:
        self._hosted = True
        if self.parent is not None:
            self.parent.spawn(self._hold(), name=f"{self.name} group")
        else:
            loop = asyncio.get_running_loop()
            self._host = loop.create_task(self._hold(), name=f"{self.name} group")

    async def _hold(self) -> None:
        """The host task: the group stays open while it has tasks (new ones may join)."""
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                while self._waiting:
                    handle = self._waiting.pop(0)
                    group.start_soon(self._run, handle, name=handle.name)
        finally:
            self._group = None
            self._hosted, self._host = False, None
            if self._waiting:  # spawned while the group was closing
                self._start_host()

    async def _run(self, handle: TaskHandle) -> None:
        if self._owner is not None:
            watchdog.attribute(asyncio.current_task(), self._owner)
        try:
            with anyio.CancelScope() as scope:
                handle.bind(scope)
                try:
                    await handle.coro
                except Exception as exc:  # the owner's policy, not the group's: others go on
                    if handle.on_error is None:
                        logger.error("%s: task failed", self.name, exc_info=exc)
                    else:
                        handle.on_error(exc)
        finally:
            self._handles.discard(handle)
