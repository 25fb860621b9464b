"""One status poller per connection in a triggerer process, shared by all waits on that connection.

Instead of one ``task/get_status`` per waiting task per interval, a round asks the server once for
the caller's tasks modified since the last round (``task/get_tasks_modified_since``) and hands each
waiting trigger the status of its own task. Tasks the answer cannot cover (someone else's task,
a non-``user`` label) fall back to a per-task status read. It is a cache, so it is strict about
freshness: a waiter only takes a status from a round that *started after* it asked, so a status read
before a command (or before the trigger existed) is never taken for a new one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaCallFailed,
    PandaError,
    PandaHTTPError,
    PandaNotFoundError,
)

#: How far before the last good round a window starts: covers clock skew between us and the server.
WINDOW_MARGIN = timedelta(minutes=5)
#: The first round looks this far back, to find tasks that changed long ago (a re-deferred wait).
FIRST_LOOKBACK = timedelta(days=7)
#: At most this many per-task reads run at once (fallback tasks).
FALLBACK_CONCURRENCY = 20


@dataclass
class Reading:
    """A task's status as of a round (None: the server does not know it yet)."""

    status: str | None
    round_started: float


@dataclass
class SharedPoller:
    """Polls one connection for every task it watches; triggers wait on :meth:`next_status`."""

    key: tuple[str, float]
    client: Any
    interval: float
    log: Any
    watchers: dict[int, int] = field(default_factory=dict)  # task id -> number of waits on it
    readings: dict[int, Reading] = field(default_factory=dict)
    covered: set[int] = field(default_factory=set)  # tasks the modified-since answer has shown
    bulk: bool = True  # False once the server is found not to serve modified-since
    last_ok_start: datetime | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _loop_task: asyncio.Task | None = None

    #: An error no later round can mend (credentials refused): every waiter gets it.
    error: PandaError | None = None

    # --- one poller per (connection, interval) per event loop -----------------------------------

    @classmethod
    async def acquire(cls, conn_id: str, interval: float, log: Any) -> SharedPoller:
        from airflow_provider_panda.hooks.panda import AsyncPandaClient

        key = (id(asyncio.get_running_loop()), conn_id, interval)
        poller = _REGISTRY.get(key)
        if poller is not None:
            return poller
        async with _CREATING.setdefault(key, asyncio.Lock()):  # thousands of triggers may start at once
            poller = _REGISTRY.get(key)
            if poller is None:
                client = await AsyncPandaClient.for_connection(conn_id, log)
                poller = _REGISTRY[key] = cls((conn_id, interval), client, interval, log)
        _CREATING.pop(key, None)
        return poller

    # --- watching -------------------------------------------------------------------------------

    def watch(self, task_id: int) -> float:
        """Start watching a task; returns the time after which a round's answer is fresh for it."""
        self.watchers[task_id] = self.watchers.get(task_id, 0) + 1
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name=f"panda-poller-{self.key}")
        return time.monotonic()

    async def unwatch(self, task_id: int) -> None:
        count = self.watchers.get(task_id, 0) - 1
        if count > 0:
            self.watchers[task_id] = count
            return
        self.watchers.pop(task_id, None)
        self.readings.pop(task_id, None)
        if not self.watchers:
            await self._close()

    async def next_status(self, task_id: int, fresh_after: float) -> tuple[str | None, float]:
        """Wait for a round that started after ``fresh_after`` and return the task's status then."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.error is not None or (
                (r := self.readings.get(task_id)) is not None and r.round_started > fresh_after))
            if self.error is not None:
                raise self.error
            reading = self.readings[task_id]
        return reading.status, reading.round_started

    # --- the rounds -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.watchers:
                started = time.monotonic()
                try:
                    await self._round(started)
                except PandaAuthError as exc:  # no later round can mend it: every waiter is told
                    async with self._changed:
                        self.error = exc
                        self._changed.notify_all()
                    return
                except Exception as exc:  # every waiter keeps waiting; the next round tries again
                    self.log.warning("PanDA status round failed (%s); all waits continue", exc)
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            _REGISTRY.pop((id(asyncio.get_running_loop()), *self.key), None)

    async def _round(self, started: float) -> None:
        watched = list(self.watchers)
        fresh: dict[int, str | None] = {}
        if self.bulk:
            fresh.update(await self._bulk(watched))
        # Read one by one: without bulk, every task; with it, tasks it has never shown, and tasks
        # with no reading yet (a new wait on a task whose earlier waits have ended).
        single = [t for t in watched if t not in fresh
                  and (not self.bulk or t not in self.covered or t not in self.readings)]
        if single:
            fresh.update(await self._single(single))
        async with self._changed:
            for task_id in watched:
                if task_id in fresh:
                    self.readings[task_id] = Reading(fresh[task_id], started)
                elif task_id in self.readings:  # covered, unchanged since the last round: still true
                    self.readings[task_id] = Reading(self.readings[task_id].status, started)
            self._changed.notify_all()

    async def _bulk(self, watched: list[int]) -> dict[int, str | None]:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        since = (self.last_ok_start - WINDOW_MARGIN) if self.last_ok_start else now - FIRST_LOOKBACK
        try:
            tasks = await self.client.get_tasks_modified_since(since)
        except (PandaHTTPError, PandaCallFailed) as exc:
            missing = isinstance(exc, PandaCallFailed) or exc.status_code == 404 or "is forbidden" in exc.text
            if not missing:
                raise
            self.log.warning("The server does not serve tasks-modified-since (%s): polling task by task", exc)
            self.bulk = False
            return {}
        self.last_ok_start = now
        wanted = set(watched)
        found = {task_id: info.get("status") for task_id, info in tasks.items() if task_id in wanted}
        # The server keys its answer by reqID: a task with a reqID of its own may be hidden behind
        # another one, so only tasks keyed by their own id count as covered by later answers.
        self.covered.update(t for t in found if tasks[t].get("reqID") in (None, t))
        return found

    async def _single(self, task_ids: list[int]) -> dict[int, str | None]:
        gate = asyncio.Semaphore(FALLBACK_CONCURRENCY)

        async def one(task_id: int) -> tuple[int, str | None] | None:
            async with gate:
                try:
                    return task_id, await self.client.get_task_status(task_id)
                except PandaNotFoundError:
                    return task_id, None
                except PandaError as exc:
                    self.log.warning("PanDA task %s: status read failed (%s)", task_id, exc)
                    return None

        results = await asyncio.gather(*(one(t) for t in task_ids))
        return dict(r for r in results if r is not None)

    async def _close(self) -> None:
        _REGISTRY.pop((id(asyncio.get_running_loop()), *self.key), None)
        if self._loop_task is not None and not self._loop_task.done() and self._loop_task is not asyncio.current_task():
            self._loop_task.cancel()
        await self.client.aclose()


_REGISTRY: dict[tuple[int, str, float], SharedPoller] = {}
_CREATING: dict[tuple[int, str, float], asyncio.Lock] = {}
