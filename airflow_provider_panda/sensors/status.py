"""TaskStatusSensor: wait until a PanDA task reaches a status (poke, reschedule or deferrable)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_panda import api, arguments, xcom
from airflow_provider_panda.calls import as_task_id
from airflow_provider_panda.exceptions import PandaError, PandaInputError, PandaNotFoundError
from airflow_provider_panda.links import PandaTaskLink
from airflow_provider_panda.marks import check_after_command, upstream_mark
from airflow_provider_panda.operators.base import DEFAULT_MAP_INDEX_TEMPLATE
from airflow_provider_panda.waiting import (
    ERROR,
    FAILURE,
    NOT_FOUND_GRACE,
    SUCCESS,
    TIMEOUT,
    TaskSource,
    TaskWatch,
    WaitSpec,
    take_reading,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_panda.hooks.panda import PandaHook

#: The task state store's key for what reschedule-mode pokes saw of the task (one poke, one process).
SIGHT_KEY = "panda_sensor_sight"
#: PanDA tasks run for days to weeks: the sensor's default timeout (Airflow's is 7 days).
DEFAULT_TIMEOUT = 60 * 24 * 3600.0


class TaskStatusSensor(BaseSensorOperator):
    """Succeed when the task reaches one of ``success_statuses``; fail fast on a failure status.

    Transient faults (no answer, 5xx, 429, a page that is not PanDA's) only mean "not yet": the
    sensor keeps poking until its own ``timeout``.

    :param jedi_task_id: the task (templated, e.g. ``"{{ ti.xcom_pull('submit') }}"``).
    :param success_statuses: statuses that succeed (default ``("done",)``); ``target_statuses`` is
        its deprecated old name.
    :param allow_partial: ``finished`` (some jobs failed) succeeds too.
    :param failure_statuses: statuses that fail at once (default: failed, broken, aborted,
        exhausted, finished, minus the successes); any other stop status fails too.
    :param not_found_grace: how long the task may stay invisible (only DEFT knows it), in every mode.
    :param poll_interval: seconds between status reads (default 60); Airflow's ``poke_interval`` is the same.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param after_command: the wait never ends on the status the task had before a command sent
        upstream in this DAG run by a PanDA operator (a retry, a file recovery, a kill...): found
        on its own. Name here other Airflow tasks that pushed such a mark (XCom ``panda_command``),
        or give the mark itself.
    """

    template_fields: Sequence[str] = ("jedi_task_id",)
    operator_extra_links = (PandaTaskLink(),)
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        jedi_task_id: int | str,
        success_statuses: Sequence[str] | None = None,
        allow_partial: bool = False,
        failure_statuses: Sequence[str] | None = None,
        panda_conn_id: str = "panda_default",
        not_found_grace: float = NOT_FOUND_GRACE,
        deferrable: bool | None = None,
        target_statuses: Sequence[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        poll_interval: float | None = None,
        after_command: str | Sequence[str] | dict[str, Any] | None = None,
        map_index_template: str | None = DEFAULT_MAP_INDEX_TEMPLATE,
        **kwargs: Any,
    ) -> None:
        if poll_interval is not None and "poke_interval" in kwargs:
            raise PandaInputError("give poll_interval or poke_interval (Airflow's name for it), not both")
        name = "poke_interval" if poll_interval is None and "poke_interval" in kwargs else "poll_interval"
        kwargs["poke_interval"] = arguments.poll_interval(
            poll_interval if poll_interval is not None else kwargs.get("poke_interval", 60.0), name)
        # the label's default in the signature: partial() takes a mapped operator's defaults from there
        super().__init__(timeout=timeout, map_index_template=map_index_template, **kwargs)
        if target_statuses is not None:
            arguments.renamed(type(self).__name__, "target_statuses", "success_statuses")
            if success_statuses is not None:
                raise PandaInputError("give success_statuses (its old name: target_statuses), not both")
            success_statuses = target_statuses
        self.jedi_task_id = jedi_task_id
        self.after_command = check_after_command(after_command)
        self.spec = WaitSpec.build(api.TASK_DEFAULT_SUCCESS if success_statuses is None else success_statuses,
                                   failure_statuses,
                                   allow_partial=allow_partial)
        self.success_statuses = self.spec.success
        self.panda_conn_id = panda_conn_id
        self.poll_interval = self.poke_interval
        self.not_found_grace = arguments.grace(not_found_grace)
        self.deferrable = arguments.default_deferrable() if deferrable is None else deferrable
        self._watch: TaskWatch | None = None
        self._jedi_task_id: int | None = None

    def panda_label(self) -> str:
        """What a person knows this instance by (a mapped one's label): the PanDA task it waits for."""
        target = self._jedi_task_id or self.jedi_task_id
        return f"PanDA task {target}" if target not in (None, "") else ""

    @cached_property
    def hook(self) -> PandaHook:
        from airflow_provider_panda.hooks.panda import PandaHook

        return PandaHook(self.panda_conn_id)

    def _watch_for(self, context: Context, task_id: int) -> TaskWatch:
        """The wait's state: kept across pokes, and in reschedule mode dated from the first poke,
        so the not-visible grace expires in every mode."""
        if self._watch is None or self._watch.task_id != task_id:
            started = time.monotonic()
            if self.reschedule:
                first = context["ti"].get_first_reschedule_date(context)
                if isinstance(first, str):  # Airflow 3.1 gives the date as ISO text
                    from datetime import datetime

                    first = datetime.fromisoformat(first.replace("Z", "+00:00"))
                if first is not None:
                    started -= max(0.0, time.time() - first.timestamp())
            self._watch = TaskWatch(task_id, self.spec, self.log, started=started,
                                    not_found_grace=self.not_found_grace,
                                    stale=upstream_mark(self, context, task_id, self.after_command))
            self._recall_sight(context, self._watch)
            xcom.push_task(context["ti"], task_id, self.hook.monitor_url(task_id))
            self._jedi_task_id = task_id
        return self._watch

    def _remember_sight(self, context: Context, watch: TaskWatch) -> None:
        """Reschedule mode: keep whether the task was seen, and since when it is missing, for the
        next poke (a new process) in the task state store (Airflow >= 3.3; before, a seen task that
        goes missing gets the grace counted from the first poke)."""
        store = context.get("task_state_store") if self.reschedule else None  # type: ignore[union-attr]
        if store is None:
            return
        missing = None if watch.missing_since is None else time.time() - (time.monotonic() - watch.missing_since)
        store.set(SIGHT_KEY, {"task": watch.task_id, "seen": watch.seen, "missing_since": missing})

    def _recall_sight(self, context: Context, watch: TaskWatch) -> None:
        store = context.get("task_state_store") if self.reschedule else None  # type: ignore[union-attr]
        sight = store.get(SIGHT_KEY) if store is not None else None
        if not isinstance(sight, dict) or sight.get("task") != watch.task_id:
            return
        watch.seen = bool(sight.get("seen"))
        if isinstance(sight.get("missing_since"), (int, float)):
            watch.missing_since = time.monotonic() - max(0.0, time.time() - sight["missing_since"])

    def poke(self, context: Context) -> bool:
        from airflow_provider_panda.reports import task_failed
        from airflow_provider_panda.transport import is_transient

        task_id = as_task_id(self.jedi_task_id)
        watch = self._watch_for(context, task_id)
        try:
            verdict = take_reading(watch, TaskSource(self.hook, task_id))
        except PandaError as exc:
            if not is_transient(exc):
                raise
            self.log.warning("PanDA task %s: status read failed (%s); poking again", task_id, exc)
            return False
        finally:
            self._remember_sight(context, watch)
        if verdict == FAILURE:
            raise task_failed(self.hook, task_id, watch.last_status, self.log)
        if verdict == ERROR:
            raise PandaNotFoundError(f"PanDA task {task_id} is not known to the server "
                                     f"(waited {self.not_found_grace:.0f} s for it to appear)")
        if verdict == SUCCESS:
            self._reached(context, task_id, watch.last_status)
        return verdict == SUCCESS

    def _reached(self, context: Context, task_id: int, status: str | None) -> None:
        """A successful wait: what the task produced goes to XCom ``output_datasets`` (and asset
        events through the outlets), as after an operator's wait, for the tasks downstream."""
        from airflow_provider_panda.assets import publish_outputs

        self.log.info("PanDA task %s reached %s", task_id, status)
        publish_outputs(self, context, task_id, status)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        from airflow_provider_panda.triggers.wait import PandaTaskTrigger

        task_id = as_task_id(self.jedi_task_id)
        self.defer(
            trigger=PandaTaskTrigger.for_wait(task_id, self.panda_conn_id, self.spec, poll_interval=self.poke_interval,
                                              end_time=time.time() + self.timeout, not_found_grace=self.not_found_grace,
                                              stale=self._watch.stale if self._watch is not None else None),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        from airflow_provider_panda.reports import task_failed
        from airflow_provider_panda.triggers.wait import event_error

        task_id, status = int(event["jedi_task_id"]), event.get("task_status")
        self._jedi_task_id = task_id
        if event["status"] == SUCCESS:
            self._reached(context, task_id, status)
            return
        if event["status"] == TIMEOUT:
            from airflow_provider_panda.compat import AirflowSensorTimeout

            raise AirflowSensorTimeout(f"PanDA task {task_id} still {status} after {self.timeout} s")
        if event["status"] == FAILURE:
            raise task_failed(self.hook, task_id, status, self.log)
        raise event_error(event)
