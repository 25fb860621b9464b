"""TaskStatusSensor: wait until a PanDA task reaches a status (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_panda import api
from airflow_provider_panda.compat import conf
from airflow_provider_panda.exceptions import PandaError, PandaNotFoundError
from airflow_provider_panda.links import PandaTaskLink
from airflow_provider_panda.operators.task import as_task_id, task_failed
from airflow_provider_panda.waiting import ERROR, FAILURE, SUCCESS, TIMEOUT, TaskWatch, WaitSpec

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_panda.hooks.panda import PandaHook


class TaskStatusSensor(BaseSensorOperator):
    """Succeed when the task reaches one of ``target_statuses``; fail fast on a failure status.

    :param jedi_task_id: the task (templated, e.g. ``"{{ ti.xcom_pull('submit') }}"``).
    :param target_statuses: statuses that succeed (default ``("done",)``).
    :param failure_statuses: statuses that fail at once (default: failed, broken, aborted,
        exhausted, finished, minus the targets); any other stop status fails too.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("jedi_task_id",)
    operator_extra_links = (PandaTaskLink(),)
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        jedi_task_id: int | str,
        target_statuses: Sequence[str] = api.TASK_DEFAULT_SUCCESS,
        failure_statuses: Sequence[str] | None = None,
        panda_conn_id: str = "panda_default",
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.jedi_task_id = jedi_task_id
        self.spec = WaitSpec.build(target_statuses, failure_statuses)
        self.panda_conn_id = panda_conn_id
        self.deferrable = (conf.getboolean("operators", "default_deferrable", fallback=False)
                           if deferrable is None else deferrable)
        self._watch: TaskWatch | None = None

    @cached_property
    def hook(self) -> PandaHook:
        from airflow_provider_panda.hooks.panda import PandaHook

        return PandaHook(self.panda_conn_id)

    def poke(self, context: Context) -> bool:
        task_id = as_task_id(self.jedi_task_id)
        if self._watch is None or self._watch.task_id != task_id:
            self._watch = TaskWatch(task_id, self.spec, self.log)
            context["ti"].xcom_push(key="panda_monitor_url", value=self.hook.monitor_url(task_id))
        try:
            status = self.hook.get_task_status(task_id)
        except PandaNotFoundError:
            status = None
        verdict = self._watch.observe(status)
        if self._watch.moved:
            self._watch.log_jobs(self.hook.get_task_jobs(task_id))
        if verdict == FAILURE:
            raise task_failed(self.hook, task_id, status)
        if verdict == ERROR:
            raise PandaError(f"PanDA task {task_id} is not known to the server")
        return verdict == SUCCESS

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        from airflow_provider_panda.triggers.task import PandaTaskTrigger

        task_id = as_task_id(self.jedi_task_id)
        self.defer(
            trigger=PandaTaskTrigger(jedi_task_id=task_id, panda_conn_id=self.panda_conn_id,
                                     poll_interval=self.poke_interval, success_statuses=self.spec.success,
                                     failure_statuses=self.spec.failure, end_time=time.time() + self.timeout,
                                     cancel_on_kill=False),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        task_id, status = int(event["jedi_task_id"]), event.get("task_status")
        if event["status"] == SUCCESS:
            self.log.info("PanDA task %s reached %s", task_id, status)
            return
        if event["status"] == TIMEOUT:
            try:
                from airflow.sdk.exceptions import AirflowSensorTimeout
            except ImportError:  # pragma: no cover
                from airflow.exceptions import AirflowSensorTimeout
            raise AirflowSensorTimeout(f"PanDA task {task_id} still {status} after {self.timeout} s")
        if event["status"] == FAILURE:
            raise task_failed(self.hook, task_id, status)
        raise PandaError(event.get("message") or f"waiting on PanDA task {task_id} failed")
