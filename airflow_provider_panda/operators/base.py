"""What every PanDA operator shares: the connection, the monitor link, the task's visibility, and
the wait (sync polling or deferral, its timeout, its verdict).

Importing this module is cheap (DAG-parse time): hooks, triggers and HTTP libraries load in execute().
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_panda import arguments, xcom
from airflow_provider_panda.exceptions import PandaCommandRejected, PandaError, PandaNotFoundError, PandaTimeoutError
from airflow_provider_panda.links import PandaTaskLink
from airflow_provider_panda.marks import check_after_command, mark_before, publish, upstream_mark
from airflow_provider_panda.waiting import (
    ERROR,
    NOT_FOUND_GRACE,
    SUCCESS,
    TIMEOUT,
    StaleMark,
    TaskSource,
    TaskWatch,
    WaitSpec,
    wait_until,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_panda.hooks.panda import PandaHook

#: The map index's label where the DAG author gave no ``map_index_template`` (as an argument, in
#: ``partial()`` or in ``default_args``): Airflow renders it with the run's context once the templated
#: fields are rendered (before ``execute``, so a deferred task has it too on Airflow >= 3.2, and again
#: after ``execute``), with the (unmapped) operator as ``task``.
DEFAULT_MAP_INDEX_TEMPLATE = "{{ task.panda_label() }}"

#: Seconds ``on_kill`` keeps killing a just-submitted task the server still refuses: Airflow's
#: supervisor follows its SIGTERM with SIGKILL 5 s later.
ON_KILL_BUDGET = 3.0


def fail_without_retry(message: str, cause: Exception | None = None) -> Exception:
    """An error no Airflow retry can mend (a bad task definition, a name held by another task)."""
    from airflow_provider_panda.compat import AirflowFailException

    error = AirflowFailException(message)
    error.__cause__ = cause
    return error


class PandaBaseOperator(BaseOperator):
    """The connection, the monitor link, and the task's visibility: what every PanDA operator has."""

    operator_extra_links = (PandaTaskLink(),)
    #: Its commands leave a mark (XCom ``panda_command``) that the waits downstream look for (marks.py).
    pushes_command_marks = True
    ui_color = "#e6f0ff"

    def __init__(self, *, panda_conn_id: str = "panda_default", not_found_grace: float = NOT_FOUND_GRACE,
                 map_index_template: str | None = DEFAULT_MAP_INDEX_TEMPLATE, **kwargs: Any) -> None:
        # The default is in the signature, not set after super().__init__: Airflow's partial() fills a
        # mapped operator's arguments from the __init__ signatures' defaults (a MappedOperator's
        # map_index_template is its partial kwargs'), so .partial().expand() gets the label too.
        super().__init__(map_index_template=map_index_template, **kwargs)
        self.panda_conn_id = panda_conn_id
        self.not_found_grace = arguments.grace(not_found_grace)
        self._jedi_task_id: int | None = None

    @classmethod
    def get_serialized_fields(cls) -> frozenset[str]:
        """Airflow's fields and ``panda_conn_id``: the api-server's PanDA view reads a task's PanDA task
        through the connection the DAG gives it, from the serialized DAG (ui/store.py)."""
        return frozenset(super().get_serialized_fields() | {"panda_conn_id"})

    def panda_label(self) -> str:
        """What a person knows this task instance's PanDA task by (its mapped instance's label): the
        taskName, else the output or input dataset, else the jediTaskID it acts on; "" when none is
        known yet (the UI then shows the index)."""
        params = getattr(self, "task_params", None)
        if isinstance(params, dict) and params.get("taskName"):
            return str(params["taskName"])
        built = getattr(self, "panda_task", None)
        for name in ("out_ds", "in_ds"):
            value = built.get(name) if isinstance(built, dict) else getattr(built, name, None)
            if value:
                return str(value if isinstance(value, str) else ",".join(map(str, value)))
        target = getattr(self, "jedi_task_id", None) or self._jedi_task_id
        return f"PanDA task {target}" if target else ""

    @cached_property
    def hook(self) -> PandaHook:
        from airflow_provider_panda.hooks.panda import PandaHook

        return PandaHook(self.panda_conn_id)

    def get_template_env(self, dag: Any = None) -> Any:
        """The DAG's Jinja environment with the provider's filters (``panda_outputs``), so templates
        such as ``in_ds="{{ ti | panda_outputs('gen') }}"`` work without registering anything."""
        from airflow_provider_panda.assets import add_template_filters

        return add_template_filters(super().get_template_env(dag))

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """Render with the provider's filters in whatever environment Airflow passes: the task runner
        passes the DAG's, and a mapped task renders with the MappedOperator's, not get_template_env's."""
        if jinja_env is not None:
            from airflow_provider_panda.assets import add_template_filters

            add_template_filters(jinja_env)
        return super().render_template(content, context, jinja_env, seen_oids)

    def _remember(self, context: Context, task_id: int) -> None:
        """Make the id known at once: XComs for users and the link."""
        self._jedi_task_id = task_id
        xcom.push_task(context["ti"], task_id, self.hook.monitor_url(task_id))

    def _status(self, task_id: int) -> str | None:
        try:
            return self.hook.get_task_status(task_id)
        except PandaNotFoundError:
            return None

    def _await_visible(self, task_id: int, poll: float = 10.0) -> str:
        """A just-submitted task is only in DEFT for a while, then JEDI has it unrefined (status
        ``registered``, owner ``tobeset``): either way the server refuses its owner's commands ("not
        the task owner"). Wait until JEDI has refined it, within ``not_found_grace``, through
        transient faults too; a task still unrefined then is commanded anyway (a production role
        may), and the server's answer stands."""
        watch = TaskWatch(task_id, WaitSpec.any(), self.log, not_found_grace=self.not_found_grace,
                          until_refined=True, progress=False)
        verdict = wait_until(watch, TaskSource(self.hook, task_id), poll, time.time() + self.not_found_grace)
        if verdict == TIMEOUT and watch.error is not None:
            raise watch.error
        if watch.last_status is None:
            raise PandaNotFoundError(f"PanDA task {task_id} is not known to the server "
                                     f"(waited {self.not_found_grace:.0f} s for it to appear)")
        return watch.last_status

    def _mark(self, task_id: int, status: str, command: str) -> StaleMark:
        """What the task says before ``command``, so the waits after it can tell old from new."""
        return mark_before(self.hook, task_id, status, command, self.log)

    def _sent(self, context: Context, task_id: int, mark: StaleMark) -> None:
        """A command was accepted: the waits downstream (and this operator's own) look past ``mark``."""
        publish(context, task_id, mark)


class PandaWaitingOperator(PandaBaseOperator):
    """An operator that can wait on its task: sync polling or deferral, the timeout, the verdict.

    Every wait ends in :meth:`_conclude`, in the worker or after the trigger fired. The state a
    wait needs afterwards (``end_time``, and what a subclass adds) travels as keyword arguments,
    called *carried* here: through the trigger's ``carry`` and ``execute_complete``'s kwargs.
    """

    #: Whether a successful wait reads the task's output datasets (XCom, asset events).
    publishes_outputs = False
    #: Whether this operator owns the task it waits on (it submitted it): only an owner may kill it
    #: on a timeout or when the Airflow task is killed.
    owns_task = False

    def __init__(
        self,
        *,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        success_statuses: Sequence[str] | None = None,
        failure_statuses: Sequence[str] | None = None,
        allow_partial: bool = False,
        after_command: str | Sequence[str] | dict[str, Any] | None = None,
        on_timeout: str | None = None,
        cancel_on_kill: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        where = type(self).__name__
        self.wait_for_completion = wait_for_completion
        if not wait_for_completion:
            given = [name for name, value in (("deferrable=True", deferrable), ("timeout", timeout is not None),
                                              ("success_statuses", success_statuses is not None),
                                              ("failure_statuses", failure_statuses is not None),
                                              ("allow_partial=True", allow_partial), ("after_command", after_command),
                                              ("on_timeout", on_timeout is not None)) if value]
            if given:
                arguments.no_effect(where, ", ".join(given), "nothing is waited for without wait_for_completion=True")
        self.deferrable = arguments.default_deferrable() if deferrable is None else deferrable
        self.poll_interval = arguments.poll_interval(poll_interval)
        self.timeout = arguments.timeout(timeout)
        self.after_command = check_after_command(after_command)
        if success_statuses is not None or failure_statuses is not None or allow_partial:
            self.spec = WaitSpec.build(self.default_spec().success if success_statuses is None else success_statuses,
                                       failure_statuses, allow_partial=allow_partial)
        else:
            self.spec = self.default_spec()
        self.success_statuses = self.spec.success
        self.allow_partial = allow_partial
        if self.owns_task:
            self.on_timeout = arguments.one_of("fail" if on_timeout is None else on_timeout, "on_timeout",
                                               arguments.ON_TIMEOUT)
            self.cancel_on_kill = True if cancel_on_kill is None else bool(cancel_on_kill)
            return
        why = f"{where} does not own the task (a task instance only kills the tasks it submitted)"
        if on_timeout not in (None, "fail"):
            arguments.one_of(on_timeout, "on_timeout", arguments.ON_TIMEOUT)
            arguments.no_effect(where, f"on_timeout={on_timeout!r}", why)
        if cancel_on_kill:
            arguments.no_effect(where, "cancel_on_kill=True", why)
        self.on_timeout, self.cancel_on_kill = "fail", False

    @classmethod
    def default_spec(cls) -> WaitSpec:
        """The statuses that end this operator's wait when the user names none."""
        return WaitSpec.build()

    def _await_visible(self, task_id: int, poll: float | None = None) -> str:
        return super()._await_visible(task_id, min(self.poll_interval, 10.0) if poll is None else poll)

    def _wait(self, context: Context, task_id: int, end_time: float | None, stale: StaleMark | None = None,
              **carried: Any) -> Any:
        """Wait in the worker or defer to the triggerer; both end in :meth:`_conclude`. The wait
        looks past the status the task had before the newest command on it: this operator's own
        (``stale``) or one sent upstream in this DAG run (marks.py)."""
        stale = StaleMark.newest(stale, upstream_mark(self, context, task_id, self.after_command))
        if self.deferrable:
            from airflow_provider_panda.triggers.wait import PandaTaskTrigger

            self.defer(
                trigger=PandaTaskTrigger.for_wait(
                    task_id, self.panda_conn_id, self.spec, poll_interval=self.poll_interval, end_time=end_time,
                    stale=stale, not_found_grace=self.not_found_grace, cancel_on_kill=self.cancel_on_kill,
                    carry={"end_time": end_time, **carried}),
                method_name="execute_complete",
                kwargs={"end_time": end_time, **carried},
            )
        return self._poll(context, task_id, end_time, stale, **carried)

    def _poll(self, context: Context, task_id: int, end_time: float | None, stale: StaleMark | None,
              **carried: Any) -> Any:
        """The sync wait: transient faults (no answer, 5xx, 429, a page that is not PanDA's) keep it
        going until its own timeout; only a definite answer ends it."""
        watch = TaskWatch(task_id, self.spec, self.log, stale=stale, not_found_grace=self.not_found_grace)
        verdict = wait_until(watch, TaskSource(self.hook, task_id), self.poll_interval, end_time)
        return self._conclude(context, task_id, verdict, watch.last_status, end_time=end_time, **carried)

    def execute_complete(self, context: Context, event: dict[str, Any], end_time: float | None = None,
                         **carried: Any) -> Any:
        """Resume after the trigger fired; the state the trigger carried wins over method kwargs."""
        task_id = int(event["jedi_task_id"])
        self._jedi_task_id = task_id
        state = {"end_time": end_time, **carried, **(event.get("carry") or {})}
        if event["status"] == ERROR:
            from airflow_provider_panda.triggers.wait import event_error

            raise event_error(event)
        return self._conclude(context, task_id, event["status"], event.get("task_status"), **state)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, attempts: Sequence[dict[str, Any]] = (), **carried: Any) -> Any:
        """The wait's verdict as the operator's outcome: the jediTaskID, or an error that says why."""
        from airflow_provider_panda.reports import task_failed

        if attempts:
            context["ti"].xcom_push(key=xcom.ATTEMPTS, value=list(attempts))
        if verdict == SUCCESS:
            self.log.info("PanDA task %s ended %s%s: %s", task_id, status,
                          f" after {len(attempts) + 1} attempts" if attempts else "", self.hook.monitor_url(task_id))
            if self.publishes_outputs:  # XCom output_datasets and asset events (assets.py)
                from airflow_provider_panda.assets import publish_outputs

                publish_outputs(self, context, task_id, status)
            return task_id
        if verdict == TIMEOUT:
            self._act_on_timeout(task_id, status)
        if verdict == ERROR:
            raise PandaNotFoundError(f"PanDA task {task_id} is not known to the server")
        raise task_failed(self.hook, task_id, status, self.log, attempts)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the task's input and output datasets and a ``panda`` run facet (lineage.py)."""
        from airflow_provider_panda.lineage import operator_lineage

        return operator_lineage(self)

    def _act_on_timeout(self, task_id: int, status: str | None) -> None:
        action = ""
        try:
            if self.on_timeout == "kill":
                self.hook.kill_task(task_id)
                action = "; it was killed"
            elif self.on_timeout == "finish":
                self.hook.finish_task(task_id, soft=True)
                action = "; it was asked to finish (soft: running jobs complete)"
        except PandaCommandRejected as exc:
            action = f"; {self.on_timeout} was rejected: {exc.server_message}"
        except PandaError as exc:  # the timeout stays the error; the failed action is part of it
            action = f"; {self.on_timeout} failed: {exc}"
        raise PandaTimeoutError(f"PanDA task {task_id} was still {status} after {self.timeout} s{action}. "
                                f"Monitor: {self.hook.monitor_url(task_id)}")

    def on_kill(self) -> None:
        """Killing the Airflow task kills the PanDA task if this operator owns it and ``cancel_on_kill``
        is set; otherwise it only stops the wait."""
        if self._jedi_task_id is None:
            return
        if not self.owns_task:
            self.log.info("The Airflow task was killed: stopped waiting on PanDA task %s (a command already sent "
                          "stands)", self._jedi_task_id)
            return
        if not self.cancel_on_kill:
            self.log.info("The Airflow task was killed; PanDA task %s is left running (cancel_on_kill is off)",
                          self._jedi_task_id)
            return
        try:
            self.hook.kill_own_task(self._jedi_task_id, ON_KILL_BUDGET)
            self.log.info("Killed PanDA task %s", self._jedi_task_id)
        except PandaCommandRejected as exc:
            self.log.info("PanDA task %s not killed: %s", self._jedi_task_id, exc.server_message)
        except PandaError:
            self.log.warning("Could not kill PanDA task %s", self._jedi_task_id, exc_info=True)

    def _end_time(self) -> float | None:
        return None if self.timeout is None else time.time() + self.timeout
