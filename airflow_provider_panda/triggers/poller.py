"""One status poller per connection in a triggerer process, shared by all waits on that connection.

Instead of one ``task/get_status`` per waiting task per interval, a round asks the server once for
the caller's tasks modified since the last round (``task/get_tasks_modified_since``: the change
feed) and hands each waiting trigger the status of its own task. Tasks the answer cannot cover
(someone else's task, a non-``user`` label, a task hidden behind another with the same reqID) fall
back to a per-task status read. It is a cache, so it is strict about freshness: a waiter only takes
a status from a round that *started after* it asked, so a status read before a command (or before
the trigger existed) is never taken for a new one.

The change feed is not complete: JEDI writes some statuses with a back-dated ``modificationTime``
on purpose (1 h after task commands, 1 day in ``updateTaskModTimeJEDI``), clocks drift, and the
server answers ``{}`` on a database error. So every :data:`SWEEP_EVERY`-th round is a *sweep*: the
same call with ``since`` in the distant past and ``min_task_id`` just below the oldest watched task,
which lists every watched task whatever its ``modificationTime`` (the server looks back at most 30
days); a watched task the sweep does not list is read on its own. Every watched task is thus
confirmed at least every :data:`SWEEP_EVERY` answered rounds, for one request per round in all.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_panda.exceptions import (
    PandaCallFailed,
    PandaError,
    PandaHTTPError,
    PandaNotFoundError,
    PandaResponseError,
)
from airflow_provider_panda.transport import is_transient

#: How far before the last good round a window starts (at least two intervals, see margin()):
#: covers clock skew between us and the server and a round that took long.
WINDOW_MARGIN = timedelta(minutes=5)
#: Every this many rounds the change feed is replaced by a sweep (K; see README "Waits, retries
#: and credentials": at 10,000 waits a sweep answer is ~3 MB, so K=5 keeps the average under 1 MB
#: per interval while a back-dated change ends its wait within 5 intervals).
SWEEP_EVERY = 5
#: This many new waits with no reading yet are served by a sweep now (one request), fewer by
#: per-task reads (many triggers start together after a triggerer restart).
SWEEP_FOR_NEW = 20
#: A sweep's ``since``: before any task (the server moves anything older than 30 days up to that).
SWEEP_SINCE = datetime(2000, 1, 1)
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
    swept: set[int] = field(default_factory=set)  # tasks watched during an answered sweep
    bulk: bool = True  # False once the server is found not to serve modified-since
    last_ok_start: datetime | None = None
    rounds: int = 0
    last_sweep: int = -SWEEP_EVERY  # the round of the last answered sweep (the first round sweeps)
    confirmed: dict[int, int] = field(default_factory=dict)  # task id -> last round that read its status
    #: Requests per kind ("feed", "sweep", "single"), for benchmarks and tests.
    sent: dict[str, int] = field(default_factory=lambda: {"feed": 0, "sweep": 0, "single": 0})
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _loop_task: asyncio.Task | None = None

    #: An error no later round can mend (credentials refused, proxy expired, token file gone, an
    #: answer we cannot read): every waiter gets it.
    error: BaseException | None = None
    #: The same for one task (the server said no to its own read): that task's waiters get it.
    task_errors: dict[int, PandaError] = field(default_factory=dict)

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
        self.task_errors.pop(task_id, None)
        self.confirmed.pop(task_id, None)
        self.swept.discard(task_id)
        if not self.watchers:
            await self._close()

    async def next_status(self, task_id: int, fresh_after: float) -> tuple[str | None, float]:
        """Wait for a round that started after ``fresh_after`` and return the task's status then."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.error is not None or task_id in self.task_errors or (
                (r := self.readings.get(task_id)) is not None and r.round_started > fresh_after))
            if self.error is not None:
                raise self.error
            if task_id in self.task_errors:
                raise self.task_errors[task_id]
            reading = self.readings[task_id]
        return reading.status, reading.round_started

    # --- the rounds -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.watchers:
                started = time.monotonic()
                try:
                    await self._round(started)
                except Exception as exc:
                    if is_transient(exc):  # every waiter keeps waiting (to its own deadline); the next round tries
                        self.log.warning("PanDA status round failed (%s); all waits continue", exc)
                    elif await self.client.reload(force=True):  # the connection has new credentials or settings
                        self.log.warning("PanDA status round failed (%s); retrying with the connection's "
                                         "new settings", exc)
                        continue
                    else:  # no later round can mend it (as the sync wait fails on it): every waiter is told
                        self.log.error("PanDA status round failed (%s); ending every wait on this connection", exc)
                        async with self._changed:
                            self.error = exc
                            self._changed.notify_all()
                        return
                await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))
        finally:
            _REGISTRY.pop((id(asyncio.get_running_loop()), *self.key), None)

    def margin(self) -> timedelta:
        return max(WINDOW_MARGIN, timedelta(seconds=2 * self.interval))

    async def _round(self, started: float) -> None:
        self.rounds += 1
        watched = list(self.watchers)
        fresh: dict[int, str | None] = {}
        answered = sweep_answered = False
        if self.bulk:
            new = sum(1 for t in watched if t not in self.readings)
            sweep = self.rounds - self.last_sweep >= SWEEP_EVERY or new >= SWEEP_FOR_NEW
            found = await self._bulk(watched, sweep)
            answered, sweep_answered = found is not None, found is not None and sweep
            fresh.update(found or {})
        # Read one by one: without bulk, every task; with it, tasks with no reading yet (a new wait),
        # tasks a sweep did not list or listed under another task's reqID (someone else's task,
        # another label: the feed cannot show them), and tasks no answer has confirmed for
        # SWEEP_EVERY rounds (if the sweep itself looked like a database error, give it one more
        # round before reading them all one by one). A new task the feed does not show is
        # confirmed by the next sweep, at most SWEEP_EVERY rounds later.
        overdue = SWEEP_EVERY if sweep_answered or not self.bulk else 2 * SWEEP_EVERY
        single = [t for t in watched if t not in fresh
                  and (not self.bulk or t not in self.readings or (t in self.swept and t not in self.covered)
                       or self.rounds - self.confirmed.get(t, self.rounds) >= overdue)]
        if single:
            fresh.update(await self._single(single))
        async with self._changed:
            for task_id in watched:
                if task_id in fresh:
                    self.readings[task_id] = Reading(fresh[task_id], started)
                    self.confirmed[task_id] = self.rounds
                elif answered and task_id in self.covered and task_id in self.readings:
                    # an answer that would list it had it changed did not: still true. Nothing else
                    # confirms a reading (a failed read, an answer that cannot show the task).
                    self.readings[task_id] = Reading(self.readings[task_id].status, started)
                self.confirmed.setdefault(task_id, self.rounds)
            self._changed.notify_all()

    async def _bulk(self, watched: list[int], sweep: bool) -> dict[int, str | None] | None:
        """Statuses from the change feed, or from a sweep; None if there is no answer to trust."""
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        if sweep:
            since, min_task_id = SWEEP_SINCE, max(0, min(watched) - 1)
        else:
            since, min_task_id = (self.last_ok_start or now) - self.margin(), None
        try:
            self.sent["sweep" if sweep else "feed"] += 1
            tasks = await self.client.get_tasks_modified_since(since, min_task_id)
        except (PandaHTTPError, PandaCallFailed) as exc:
            missing = isinstance(exc, PandaCallFailed) or exc.status_code == 404 or "is forbidden" in exc.text
            if not missing:
                raise
            self.log.warning("The server does not serve tasks-modified-since (%s): polling task by task", exc)
            self.bulk = False
            return None
        wanted = set(watched)
        found = {task_id: info.get("status") for task_id, info in tasks.items() if task_id in wanted}
        if sweep and not found and wanted & self.covered:
            # Every watched task the feed has shown should be listed: an empty answer is the server's
            # "{}" on a database error. The feed's window is not moved on; the sweep stays due.
            self.log.warning("PanDA answered a status sweep with no watched task; sweeping again next round")
            return None
        self.last_ok_start = now
        if sweep:
            self.last_sweep = self.rounds
            self.swept.update(watched)
        # The server keys its answer by reqID: a task with a reqID of its own may be hidden behind
        # another one, so only tasks keyed by their own id count as covered by later answers.
        self.covered.update(t for t in found if tasks[t].get("reqID") in (None, t))
        return found

    async def _single(self, task_ids: list[int]) -> dict[int, str | None]:
        """Each task's own status read. A transient failure leaves the task unread this round; the
        server saying no about one task ends that task's waits; any other error (credentials refused,
        proxy expired...) is the connection's and fails the round, as a failed bulk call does."""
        gate = asyncio.Semaphore(FALLBACK_CONCURRENCY)

        async def one(task_id: int) -> tuple[int, str | None] | None:
            async with gate:
                self.sent["single"] += 1
                try:
                    return task_id, await self.client.get_task_status(task_id)
                except PandaNotFoundError:
                    return task_id, None
                except (PandaCallFailed, PandaResponseError) as exc:
                    if is_transient(exc):
                        self.log.warning("PanDA task %s: status read failed (%s)", task_id, exc)
                        return None
                    self.log.error("PanDA task %s: status read refused (%s); ending its waits", task_id, exc)
                    async with self._changed:
                        self.task_errors[task_id] = exc
                        self._changed.notify_all()
                    return None
                except PandaError as exc:
                    if not is_transient(exc):
                        raise
                    self.log.warning("PanDA task %s: status read failed (%s)", task_id, exc)
                    return None

        results = await asyncio.gather(*(one(t) for t in task_ids), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return dict(r for r in results if r is not None)

    async def _close(self) -> None:
        _REGISTRY.pop((id(asyncio.get_running_loop()), *self.key), None)
        if self._loop_task is not None and not self._loop_task.done() and self._loop_task is not asyncio.current_task():
            self._loop_task.cancel()
        await self.client.aclose()


_REGISTRY: dict[tuple[int, str, float], SharedPoller] = {}
_CREATING: dict[tuple[int, str, float], asyncio.Lock] = {}
