"""PandaTaskTrigger: the deferrable wait on a PanDA task, run in the triggerer's event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaCommandRejected, PandaError, PandaNotFoundError
from airflow_provider_panda.transport import is_transient
from airflow_provider_panda.waiting import ERROR, FAILURE, SUCCESS, TIMEOUT, TaskWatch, WaitSpec


class PandaTaskTrigger(BaseTrigger):
    """Wait, without blocking the event loop, until a PanDA task reaches a status that ends the wait.

    Fires one event ``{"status": success|failure|timeout|error, "jedi_task_id", "task_status", "message", "carry"}``.

    :param jedi_task_id: the jediTaskID (not ``task_id``: the triggerer sets that kwarg to the Airflow task's id).
    :param panda_conn_id: the Airflow connection of the server.
    :param poll_interval: seconds between status reads.
    :param success_statuses: statuses that end the wait well.
    :param failure_statuses: statuses that end it badly (any other stop status does too).
    :param end_time: epoch seconds after which the wait fires ``timeout``; None waits forever.
    :param cancel_on_kill: kill the PanDA task when a user kills the deferred Airflow task.
    :param stale_status: a status read before a command that must not end the wait (see TaskWatch).
    :param carry: primitives echoed back in the event, so the resumed operator gets its state even
        where method kwargs are dropped (``airflow dags test`` keeps only the event).
    """

    def __init__(
        self,
        jedi_task_id: int,
        panda_conn_id: str = "panda_default",
        poll_interval: float = 60.0,
        success_statuses: tuple[str, ...] | list[str] = api.TASK_DEFAULT_SUCCESS,
        failure_statuses: tuple[str, ...] | list[str] | None = None,
        end_time: float | None = None,
        cancel_on_kill: bool = True,
        stale_status: str | None = None,
        carry: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.jedi_task_id = int(jedi_task_id)
        self.panda_conn_id = panda_conn_id
        self.poll_interval = float(poll_interval)
        self.success_statuses = tuple(success_statuses)
        self.failure_statuses = tuple(failure_statuses) if failure_statuses is not None else None
        self.end_time = end_time
        self.cancel_on_kill = cancel_on_kill
        self.stale_status = stale_status
        self.carry = dict(carry or {})

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
            },
        )

    def _event(self, status: str, task_status: str | None, message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "jedi_task_id": self.jedi_task_id, "task_status": task_status,
                             "message": message, "carry": self.carry})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_panda.hooks.panda import AsyncPandaClient

        spec = WaitSpec.build(self.success_statuses, self.failure_statuses)
        watch = TaskWatch(self.jedi_task_id, spec, self.log, stale_status=self.stale_status)
        try:
            client = await AsyncPandaClient.for_connection(self.panda_conn_id, self.log)
        except PandaError as exc:
            yield self._event(ERROR, None, str(exc))
            return
        try:
            while True:
                try:
                    try:
                        status: str | None = await client.get_task_status(self.jedi_task_id)
                    except PandaNotFoundError:
                        status = None
                    verdict = watch.observe(status)
                    if watch.changed and status is not None:
                        watch.log_jobs(await client.get_task_jobs(self.jedi_task_id))
                except PandaError as exc:
                    if not is_transient(exc):
                        yield self._event(ERROR, watch.last_status, str(exc))
                        return
                    self.log.warning("PanDA task %s: status read failed (%s); still waiting", self.jedi_task_id, exc)
                    verdict = None
                if verdict in (SUCCESS, FAILURE):
                    yield self._event(verdict, status, f"PanDA task {self.jedi_task_id} is {status}")
                    return
                if verdict == ERROR:
                    yield self._event(ERROR, None, f"PanDA task {self.jedi_task_id} is not known to the server")
                    return
                if self.end_time is not None and time.time() >= self.end_time:
                    yield self._event(TIMEOUT, watch.last_status,
                                      f"PanDA task {self.jedi_task_id} still {watch.last_status} at the timeout")
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await client.aclose()

    async def on_kill(self) -> None:
        """Airflow >= 3.3: a user killed the deferred task; kill the PanDA task too if asked."""
        if not self.cancel_on_kill:
            return
        from airflow_provider_panda.hooks.panda import AsyncPandaClient

        client = await AsyncPandaClient.for_connection(self.panda_conn_id, self.log)
        try:
            self.log.info("Killing PanDA task %s because its Airflow task was killed", self.jedi_task_id)
            await client.kill_task(self.jedi_task_id)
        except PandaCommandRejected as exc:
            self.log.info("PanDA task %s not killed: %s", self.jedi_task_id, exc.server_message)
        finally:
            await client.aclose()
