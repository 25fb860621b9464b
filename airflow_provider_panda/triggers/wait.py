"""PandaTaskTrigger: the deferrable wait on a PanDA task, run in the triggerer's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_panda import api, arguments, exceptions
from airflow_provider_panda.exceptions import PandaCommandRejected, PandaError, PandaNotFoundError
from airflow_provider_panda.transport import is_transient
from airflow_provider_panda.waiting import (
    ERROR,
    NOT_FOUND_GRACE,
    TIMEOUT,
    StaleMark,
    TaskWatch,
    WaitSpec,
    take_reading_async,
    within,
)

_T = TypeVar("_T")

#: Airflow's default ``[triggerer] on_kill_timeout`` (seconds the triggerer waits for on_kill()).
ON_KILL_TIMEOUT = 30
#: Our kill ends this long (at most a fifth of the budget) before the triggerer gives up on it.
ON_KILL_MARGIN = 5.0

#: Seconds the one reading of a wait resumed past its deadline may take (one status read is
#: milliseconds; a server failing every read must not delay the timeout by the retries' backoff).
FIRST_READING = 10.0

def event_error(event: dict[str, Any]) -> PandaError:
    """The typed error an ``error`` event stands for (``PandaAuthError``, ``PandaNotFoundError``...)."""
    message = event.get("message") or f"waiting on PanDA task {event.get('jedi_task_id')} failed"
    return exceptions.error_from_fields(event.get("error_type"), message, event.get("error_attributes"))


class PandaTaskTrigger(BaseTrigger):
    """Wait, without blocking the event loop, until a PanDA task reaches a status that ends the wait.

    Fires one event ``{"status": success|failure|timeout|error, "jedi_task_id", "task_status", "message", "carry"}``.

    :param jedi_task_id: the jediTaskID (not ``task_id``: the triggerer sets that kwarg to the Airflow task's id).
    :param panda_conn_id: the Airflow connection of the server.
    :param poll_interval: seconds between status reads.
    :param success_statuses: statuses that end the wait well.
    :param failure_statuses: statuses that end it badly (any other stop status does too).
    :param end_time: epoch seconds after which the wait fires ``timeout``; None waits forever.
    :param cancel_on_kill: kill the PanDA task when a user kills the deferred Airflow task (only
        the operator that submitted it asks for this; default False).
    :param stale_status: a status read before a command that must not end the wait: a
        :class:`~airflow_provider_panda.waiting.StaleMark` as a dict (or a bare status).
    :param carry: primitives echoed back in the event, so the resumed operator gets its state even
        where method kwargs are dropped (``airflow dags test`` keeps only the event).
    :param shared_poller: share one status poller per connection in the triggerer (one request per
        interval for all waits, see :mod:`.poller`); False polls this task on its own.
    :param not_found_grace: how long the task may stay invisible (only DEFT knows it) before the
        wait ends with an error.
    :param not_before: epoch seconds before which no event is fired (the reading goes on; the
        event waits): the operators set it :func:`event_hold` seconds after deferral, so a task that
        ends at once does not meet Airflow's race between the deferring worker's late "success"
        and the resumed try (Airflow issues #67287, #71580).
    """

    def __init__(
        self,
        jedi_task_id: int,
        panda_conn_id: str = "panda_default",
        poll_interval: float = 60.0,
        success_statuses: tuple[str, ...] | list[str] = api.TASK_DEFAULT_SUCCESS,
        failure_statuses: tuple[str, ...] | list[str] | None = None,
        end_time: float | None = None,
        cancel_on_kill: bool = False,
        stale_status: str | dict[str, Any] | None = None,
        carry: dict[str, Any] | None = None,
        shared_poller: bool = True,
        not_found_grace: float = NOT_FOUND_GRACE,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.not_before = not_before
        self.jedi_task_id = int(jedi_task_id)
        self.panda_conn_id = panda_conn_id
        self.poll_interval = arguments.stored_interval(poll_interval)
        self.success_statuses = tuple(success_statuses)
        self.failure_statuses = tuple(failure_statuses) if failure_statuses is not None else None
        self.end_time = end_time
        self.cancel_on_kill = cancel_on_kill
        self.stale_status = stale_status
        self.carry = dict(carry or {})
        self.shared_poller = shared_poller
        self.not_found_grace = max(0.0, float(not_found_grace))

    @classmethod
    def for_wait(cls, jedi_task_id: int, panda_conn_id: str, spec: WaitSpec, *, poll_interval: float,
                 end_time: float | None, stale: StaleMark | None, not_found_grace: float,
                 cancel_on_kill: bool = False, carry: dict[str, Any] | None = None) -> PandaTaskTrigger:
        """The trigger an operator's or the sensor's deferred wait hands to the triggerer: its event
        held :func:`event_hold` seconds after now (the deferral)."""
        return cls(jedi_task_id=jedi_task_id, panda_conn_id=panda_conn_id, poll_interval=poll_interval,
                   success_statuses=spec.success, failure_statuses=spec.failure, end_time=end_time,
                   cancel_on_kill=cancel_on_kill, stale_status=stale.to_dict() if stale is not None else None,
                   carry=carry, not_found_grace=not_found_grace, not_before=time.time() + event_hold())

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "jedi_task_id": self.jedi_task_id,
                "panda_conn_id": self.panda_conn_id,
                "poll_interval": self.poll_interval,
                "success_statuses": list(self.success_statuses),
                "failure_statuses": None if self.failure_statuses is None else list(self.failure_statuses),
                "end_time": self.end_time,
                "cancel_on_kill": self.cancel_on_kill,
                "stale_status": self.stale_status,
                "carry": self.carry,
                "shared_poller": self.shared_poller,
                "not_found_grace": self.not_found_grace,
                "not_before": self.not_before,
            },
        )

    def _event(self, status: str, task_status: str | None, message: str,
               error: BaseException | None = None) -> TriggerEvent:
        payload = {"status": status, "jedi_task_id": self.jedi_task_id, "task_status": task_status,
                   "message": message, "carry": self.carry}
        if error is not None:
            fields = (error if isinstance(error, PandaError) else PandaError(str(error))).to_fields()
            payload.update(error_type=fields["error_type"], error_attributes=fields["attributes"])
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._outcome()
        if self.not_before is not None and self.not_before > time.time():
            await asyncio.sleep(self.not_before - time.time())
        yield event

    async def _outcome(self) -> TriggerEvent:
        """The event that ends the wait (read to a verdict, a timeout or an error)."""
        spec = WaitSpec.build(self.success_statuses, self.failure_statuses)
        watch = TaskWatch(self.jedi_task_id, spec, self.log, stale=StaleMark.load(self.stale_status),
                          not_found_grace=self.not_found_grace)
        try:
            source = await (_SharedSource.open(self) if self.shared_poller else _OwnSource.open(self))
        except PandaError as exc:
            return self._event(ERROR, None, str(exc), exc)
        try:
            # A wait resumed at or past its deadline (the triggerer was down) still takes one reading:
            # its own read of this task, within FIRST_READING seconds, not bounded by the deadline
            # or by the shared poller's next round (which may come later than that: a slow sweep).
            if self._time_left() is not None and self._time_left() < self.poll_interval:
                try:
                    verdict = await within(take_reading_async(watch, _OwnSource(self, source.client)),
                                           max(self.poll_interval, FIRST_READING))
                except PandaError as exc:
                    if not is_transient(exc):
                        return self._event(ERROR, watch.last_status, str(exc), exc)
                    self.log.warning("PanDA task %s: status read failed (%s)", self.jedi_task_id, exc)
                    verdict = None
                if verdict is not None or self._time_left() == 0:
                    return self._verdict_event(verdict or TIMEOUT, watch)
            while True:
                verdict = None
                try:
                    # The deadline bounds the wait for a reading too (rounds failing, a read's retries and backoff).
                    verdict = await self._before_deadline(take_reading_async(watch, source))
                except PandaError as exc:
                    if not is_transient(exc):
                        return self._event(ERROR, watch.last_status, str(exc), exc)
                    self.log.warning("PanDA task %s: status read failed (%s); still waiting", self.jedi_task_id, exc)
                if verdict is None and self._time_left() == 0:
                    verdict = TIMEOUT
                if verdict is not None:
                    return self._verdict_event(verdict, watch)
                await source.pause(self._time_left())
        finally:
            await source.close()

    def _verdict_event(self, verdict: str, watch: TaskWatch) -> TriggerEvent:
        """The event that ends the wait with ``verdict``."""
        status = watch.last_status
        if verdict == ERROR:
            message = f"PanDA task {self.jedi_task_id} is not known to the server"
            return self._event(ERROR, None, message, PandaNotFoundError(message))
        if verdict == TIMEOUT:
            return self._event(TIMEOUT, status, f"PanDA task {self.jedi_task_id} still {status} at the timeout"
                               if status is not None else
                               f"PanDA task {self.jedi_task_id} had no known status at the timeout")
        return self._event(verdict, status, f"PanDA task {self.jedi_task_id} is {status}")

    def _time_left(self) -> float | None:
        """Seconds until ``end_time`` (0 once past it); None without a deadline."""
        return None if self.end_time is None else max(0.0, self.end_time - time.time())

    async def _before_deadline(self, step: Awaitable[_T]) -> _T | None:
        """``step``'s result, or None if ``end_time`` came first."""
        return await within(step, self._time_left())

    async def on_kill(self) -> None:
        """Airflow >= 3.3: a user killed the deferred task; kill the PanDA task too if asked.

        The triggerer waits ``[triggerer] on_kill_timeout`` seconds for this, then gives up on it
        silently: the kill (with the client's retries and timeouts) is tried within a margin below
        that budget, and a kill that did not get through says so."""
        if not self.cancel_on_kill:
            self.log.info("The Airflow task was killed; PanDA task %s is left running (cancel_on_kill is off)",
                          self.jedi_task_id)
            return
        budget = kill_budget()
        self.log.info("Killing PanDA task %s because its Airflow task was killed", self.jedi_task_id)
        try:
            answered = await within(self._kill(), budget)
        except PandaError as exc:
            self.log.warning("PanDA task %s may not be killed: the kill failed (%s); kill it by hand if it still "
                             "runs", self.jedi_task_id, exc)
            return
        if answered is None:
            self.log.warning("PanDA task %s may not be killed: the kill got no answer within %.0f s (the triggerer "
                             "allows on_kill %s s, [triggerer] on_kill_timeout); kill it by hand if it still runs",
                             self.jedi_task_id, budget, on_kill_timeout())

    async def _kill(self) -> bool:
        """Send the kill; True once the server answered it."""
        from airflow_provider_panda.hooks.panda import AsyncPandaClient

        client = await AsyncPandaClient.for_connection(self.panda_conn_id, self.log)
        try:
            # within on_kill's budget: a refusal of a just-submitted task is tried again until then
            await client.kill_own_task(self.jedi_task_id, kill_budget() * 0.8)
        except PandaCommandRejected as exc:
            self.log.info("PanDA task %s not killed: %s", self.jedi_task_id, exc.server_message)
        finally:
            await client.aclose()
        return True


#: Seconds after deferral before a trigger fires its event (``[panda] trigger_event_hold``): past
#: the deferring worker's exit and the scheduler's reading of its "success" (at most ~7 s measured
#: on 2 busy cores), so Airflow's scheduler does not fail the resumed try ("finished with state
#: success, but the task instance's state attribute is queued"; Airflow #67287, fixed after 3.3.2,
#: and #71580 for a running resumed try). PanDA tasks take minutes: only instant ends wait for it.
EVENT_HOLD = 15.0


def event_hold() -> float:
    """The hold after deferral (configurable for development against a fast local server)."""
    from airflow_provider_panda.compat import conf

    return max(0.0, conf.getfloat("panda", "trigger_event_hold", fallback=EVENT_HOLD))


def on_kill_timeout() -> float:
    """The triggerer's budget for ``on_kill()`` (Airflow >= 3.3's ``[triggerer] on_kill_timeout``)."""
    from airflow_provider_panda.compat import conf

    return float(conf.getint("triggerer", "on_kill_timeout", fallback=ON_KILL_TIMEOUT))


def kill_budget() -> float:
    """The time our kill may take: the triggerer's budget less a margin to log and close in."""
    budget = on_kill_timeout()
    return max(0.1, budget - min(ON_KILL_MARGIN, budget / 5))


class _OwnSource:
    """This trigger's own status reads: one request per interval for this task."""

    def __init__(self, trigger: PandaTaskTrigger, client: Any) -> None:
        self.trigger, self.client = trigger, client

    @classmethod
    async def open(cls, trigger: PandaTaskTrigger) -> _OwnSource:
        from airflow_provider_panda.hooks.panda import AsyncPandaClient

        return cls(trigger, await AsyncPandaClient.for_connection(trigger.panda_conn_id, trigger.log))

    async def read(self) -> str | None:
        try:
            return await self.client.get_task_status(self.trigger.jedi_task_id)
        except PandaNotFoundError:
            return None

    async def pause(self, time_left: float | None) -> None:
        """One poll interval, or less if the deadline comes first."""
        await asyncio.sleep(self.trigger.poll_interval if time_left is None else min(self.trigger.poll_interval,
                                                                                     time_left))

    async def close(self) -> None:
        await self.client.aclose()


class _SharedSource:
    """Statuses from the connection's shared poller; each read waits for the next fresh round."""

    def __init__(self, trigger: PandaTaskTrigger, poller: Any) -> None:
        self.trigger, self.poller, self.client = trigger, poller, poller.client
        self.fresh_after = poller.watch(trigger.jedi_task_id)

    @classmethod
    async def open(cls, trigger: PandaTaskTrigger) -> _SharedSource:
        from airflow_provider_panda.triggers.poller import SharedPoller

        return cls(trigger, await SharedPoller.acquire(trigger.panda_conn_id, trigger.poll_interval, trigger.log))

    async def read(self) -> str | None:
        status, self.fresh_after = await self.poller.next_status(self.trigger.jedi_task_id, self.fresh_after)
        return status

    async def pause(self, time_left: float | None) -> None:
        """Nothing to wait for here: the next read waits for the poller's next round."""

    async def close(self) -> None:
        await self.poller.unwatch(self.trigger.jedi_task_id)
