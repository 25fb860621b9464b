"""Operators for PanDA tasks: submit and wait, retry, kill, finish, recover lost files.

Importing this module is cheap (DAG-parse time): hooks, triggers and HTTP libraries load in execute().
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_panda import api
from airflow_provider_panda.calls import as_task_id, check_task_params, finite
from airflow_provider_panda.compat import conf
from airflow_provider_panda.exceptions import (
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaError,
    PandaInputError,
    PandaNotFoundError,
    PandaTaskNameTaken,
    PandaTimeoutError,
)
from airflow_provider_panda.links import MONITOR_URL_KEY, PandaTaskLink
from airflow_provider_panda.marks import check_after_command, mark_before, publish, upstream_mark
from airflow_provider_panda.waiting import (
    ERROR,
    FAILURE,
    NOT_FOUND_GRACE,
    SUCCESS,
    TIMEOUT,
    StaleMark,
    TaskSource,
    TaskWatch,
    WaitSpec,
    attempt_line,
    wait_until,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_panda.hooks.panda import PandaHook

__all__ = [
    "FileRecoveryOperator", "FinishTaskOperator", "KillTaskOperator", "RetryTaskOperator", "SubmitTaskOperator",
    "as_task_id",
]

TASK_ID_KEY = "jedi_task_id"
STATE_KEY = "panda_jedi_task_id"
#: The state store entry's fields: ``{"jedi_task_id": ..., "task_name": ...}`` (older entries: the id alone).
STORED_ID, STORED_NAME = "jedi_task_id", "task_name"
#: The task parameter naming the Airflow task instance that submitted a task: how a later try,
#: a clear or a lookup by name recognises "my task" (JEDI ignores keys it does not know).
OWNER_KEY = "airflowTaskInstance"
ON_TIMEOUT = ("fail", "kill", "finish")
#: What SubmitTaskOperator does when the taskName is held by a task this instance did not submit.
IF_EXISTS = ("fail", "adopt", "reexecute")
MAX_POLL_INTERVAL = 24 * 3600.0
#: Seconds ``on_kill`` keeps killing a just-submitted task the server still refuses: Airflow's
#: supervisor follows its SIGTERM with SIGKILL 5 s later.
ON_KILL_BUDGET = 3.0
#: Statuses on their way to a known end: an Airflow retry waits for the end before acting.
SETTLING = frozenset({"toabort", "aborting", "tobroken"})


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def task_instance_key(context: Context) -> str:
    """``dag_id/task_id/run_id/map_index``: the owner of the PanDA tasks a task instance submits."""
    ti = context["ti"]
    map_index = getattr(ti, "map_index", -1)
    return f"{ti.dag_id}/{ti.task_id}/{ti.run_id}/{-1 if map_index is None else map_index}"


def _submitted_by(info: dict[str, Any], params: dict[str, Any]) -> bool:
    """Whether the task's details carry the owner key of the task instance whose ``params`` these are."""
    return (info.get("raw_task_params") or {}).get(OWNER_KEY) == params[OWNER_KEY]


def _fail_without_retry(message: str, cause: Exception | None = None) -> Exception:
    """An error no Airflow retry can mend (a bad task definition, a name held by another task)."""
    try:
        from airflow.sdk.exceptions import AirflowFailException
    except ImportError:  # pragma: no cover - older layout
        from airflow.exceptions import AirflowFailException
    error = AirflowFailException(message)
    error.__cause__ = cause
    return error


class _PandaOperator(BaseOperator):
    """What every PanDA operator shares: the connection, the monitor link, the task's visibility."""

    operator_extra_links = (PandaTaskLink(),)
    #: Its commands leave a mark (XCom ``panda_command``) that the waits downstream look for (marks.py).
    pushes_command_marks = True
    ui_color = "#e6f0ff"

    def __init__(self, *, panda_conn_id: str = "panda_default", not_found_grace: float = NOT_FOUND_GRACE,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.panda_conn_id = panda_conn_id
        self.not_found_grace = finite(not_found_grace, "not_found_grace", 0)
        self._jedi_task_id: int | None = None

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

    def _remember(self, context: Context, task_id: int, task_name: str | None = None) -> None:
        """Make the id known at once: XComs for users and the link, the state store for retries
        (with the taskName it was submitted under, so a try under another name does not reuse it)."""
        self._jedi_task_id = task_id
        ti = context["ti"]
        ti.xcom_push(key=TASK_ID_KEY, value=task_id)
        ti.xcom_push(key=MONITOR_URL_KEY, value=self.hook.monitor_url(task_id))
        store = _state_store(context)
        if store is not None:
            value: Any = task_id if task_name is None else {STORED_ID: task_id, STORED_NAME: task_name}
            try:
                from airflow.sdk.execution_time.context import NEVER_EXPIRE

                store.set(STATE_KEY, value, retention=NEVER_EXPIRE)
            except ImportError:  # pragma: no cover - state store without NEVER_EXPIRE
                store.set(STATE_KEY, value)

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


class _PandaTaskWaiter(_PandaOperator):
    """An operator that can wait on its task: sync polling or deferral, timeout and its action."""

    #: Whether a successful wait reads the task's output datasets (XCom, asset events).
    publishes_outputs = False

    def __init__(
        self,
        *,
        deferrable: bool | None = None,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        on_timeout: str = "fail",
        cancel_on_kill: bool = False,
        after_command: str | Sequence[str] | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.after_command = check_after_command(after_command)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = finite(poll_interval, "poll_interval", 0.01, MAX_POLL_INTERVAL)
        self.timeout = None if timeout is None else finite(timeout, "timeout", 0.01)
        if on_timeout not in ON_TIMEOUT:
            raise PandaInputError(f"on_timeout must be one of {ON_TIMEOUT}, got {on_timeout!r}")
        self.on_timeout = on_timeout
        self.cancel_on_kill = cancel_on_kill

    def _await_visible(self, task_id: int, poll: float | None = None) -> str:
        return super()._await_visible(task_id, min(self.poll_interval, 10.0) if poll is None else poll)

    def _wait(self, context: Context, task_id: int, spec: WaitSpec, end_time: float | None,
              stale: StaleMark | None = None, **resume: Any) -> Any:
        """Wait in the worker or defer to the triggerer; both end in :meth:`_conclude`. The wait
        looks past the status the task had before the newest command on it: this operator's own
        (``stale``) or one sent upstream in this DAG run (marks.py)."""
        stale = StaleMark.newest(stale, upstream_mark(self, context, task_id, self.after_command))
        if self.deferrable:
            from airflow_provider_panda.triggers.task import PandaTaskTrigger, event_hold

            self.defer(
                trigger=PandaTaskTrigger(
                    jedi_task_id=task_id, panda_conn_id=self.panda_conn_id, poll_interval=self.poll_interval,
                    success_statuses=spec.success, failure_statuses=spec.failure, end_time=end_time,
                    cancel_on_kill=self.cancel_on_kill, stale_status=stale.to_dict() if stale else None,
                    carry={"end_time": end_time, **resume}, not_found_grace=self.not_found_grace,
                    not_before=time.time() + event_hold(),
                ),
                method_name="execute_complete",
                kwargs={"end_time": end_time, **resume},
            )
        return self._poll(context, task_id, spec, end_time, stale, **resume)

    def _poll(self, context: Context, task_id: int, spec: WaitSpec, end_time: float | None,
              stale: StaleMark | None, **resume: Any) -> Any:
        """The sync wait: transient faults (no answer, 5xx, 429, a page that is not PanDA's) keep it
        going until its own timeout; only a definite answer ends it."""
        watch = TaskWatch(task_id, spec, self.log, stale=stale, not_found_grace=self.not_found_grace)
        verdict = wait_until(watch, TaskSource(self.hook, task_id), self.poll_interval, end_time)
        return self._conclude(context, task_id, verdict, watch.last_status, end_time=end_time, **resume)

    def execute_complete(self, context: Context, event: dict[str, Any], end_time: float | None = None,
                         **resume: Any) -> Any:
        """Resume after the trigger fired; the state the trigger carried wins over method kwargs."""
        task_id = int(event["jedi_task_id"])
        self._jedi_task_id = task_id
        state = {"end_time": end_time, **resume, **(event.get("carry") or {})}
        if event["status"] == ERROR:
            from airflow_provider_panda.triggers.task import event_error

            raise event_error(event)
        return self._conclude(context, task_id, event["status"], event.get("task_status"), **state)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, attempts: Sequence[dict[str, Any]] = (), **resume: Any) -> Any:
        from airflow_provider_panda.reports import task_failed

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
        """Killing the Airflow task kills the PanDA task when ``cancel_on_kill`` is set."""
        if self._jedi_task_id is None:
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


def _state_store(context: Context) -> Any:
    """Airflow >= 3.3's per-task store that survives retries and clears (AIP-103), or None."""
    try:
        return context.get("task_state_store")  # type: ignore[union-attr]
    except Exception:  # pragma: no cover - a context without it
        return None


class SubmitTaskOperator(_PandaTaskWaiter):
    """Submit a PanDA task and (by default) wait until it reaches a final status.

    Returns the jediTaskID (XCom ``return_value``); pushes ``jedi_task_id`` and the monitor URL as
    soon as the task exists. A task instance (dag_id, task_id, run_id, map_index) owns the PanDA
    tasks it submitted, and only those: the parameters carry its key (``airflowTaskInstance``), a
    later try or a clear finds its task (task state store, else a lookup by taskName) and never
    adopts or re-executes another one unless ``if_exists`` says so. See the README's table
    "What each Airflow action does to the PanDA task".

    :param task_params: the task parameters (dict), or a ``.json`` template file; templated. The
        operator sets ``uniqueTaskName: true`` unless given. Make ``taskName`` unique per run and
        map index (e.g. include ``{{ run_id }}`` and ``{{ ti.map_index }}``).
    :param task: instead of ``task_params``, a :class:`~airflow_provider_panda.tasks.PrunTask` (or a dict
        of its fields): the map prun would make for it, with its sandbox uploaded; its fields are templated.
    :param wait_for_completion: wait until a final status, else return after submitting.
    :param success_statuses: statuses that succeed (default ``("done",)``).
    :param allow_partial: ``finished`` (some jobs failed) succeeds too.
    :param auto_retries: on a failing status, ask PanDA to retry the task up to this many times.
    :param retry_new_params: parameters merged into the task on each PanDA retry.
    :param if_exists: the taskName is held by a task this instance did not submit: ``fail``
        (default, before anything changes on the server), ``adopt`` (wait on that task as if it
        were ours) or ``reexecute`` (PanDA's incremental execution: re-run that finished task on
        new input; refused while it is still active).
    :param timeout: seconds to wait before ``on_timeout`` acts (``fail``, ``kill``, ``finish``).
    :param cancel_on_kill: kill the PanDA task when the Airflow task is killed (marked failed or
        success, cleared while running, or killed).
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).

    After a successful wait it pushes ``output_datasets`` (the output and log datasets with their
    file counts) and, for ``AssetAlias`` or ``rucio://`` outlets, asset events for the output
    datasets (:mod:`airflow_provider_panda.assets`).
    """

    publishes_outputs = True
    template_fields: Sequence[str] = ("task_params", "task", "retry_new_params", "parent_task_id")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"task_params": "json", "task": "json", "retry_new_params": "json"}

    def __init__(
        self,
        *,
        task_params: dict[str, Any] | str | None = None,
        task: Any = None,
        wait_for_completion: bool = True,
        success_statuses: Sequence[str] = api.TASK_DEFAULT_SUCCESS,
        allow_partial: bool = False,
        auto_retries: int = 0,
        retry_new_params: dict[str, Any] | None = None,
        parent_task_id: int | str | None = None,
        if_exists: str = "fail",
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(cancel_on_kill=cancel_on_kill, **kwargs)
        if (task_params is None) == (task is None):
            raise PandaInputError("give either task_params or task (a PrunTask), not both and not neither")
        if task is not None:
            from airflow_provider_panda.tasks import as_task

            task = as_task(task)
        elif not isinstance(task_params, (dict, str)):
            raise PandaInputError(f"task_params must be a dict or a .json file, got {type(task_params).__name__}")
        if isinstance(auto_retries, bool) or not isinstance(auto_retries, int) or not 0 <= auto_retries <= 100:
            raise PandaInputError(f"auto_retries must be an integer from 0 to 100, got {auto_retries!r}")
        if if_exists not in IF_EXISTS:
            raise PandaInputError(f"if_exists must be one of {IF_EXISTS}, got {if_exists!r}")
        self.task_params = task_params
        self.task = task
        self.wait_for_completion = wait_for_completion
        self.spec = WaitSpec.build(success_statuses, allow_partial=allow_partial)
        self.success_statuses = self.spec.success
        self.allow_partial = allow_partial
        self.auto_retries = auto_retries
        self.retry_new_params = retry_new_params
        self.parent_task_id = parent_task_id
        self.if_exists = if_exists

    def render_template(self, content: Any, context: Any, jinja_env: Any = None, seen_oids: Any = None) -> Any:
        """Only a top-level string ending in ``.json`` is a template file: strings inside a dict
        (``"python run.py --config settings.json"``) are plain templates."""
        if isinstance(content, (dict, list, tuple)) and self.template_ext:
            self.template_ext = ()
            try:
                return super().render_template(content, context, jinja_env, seen_oids)
            finally:
                del self.template_ext
        return super().render_template(content, context, jinja_env, seen_oids)

    def _params(self, context: Context) -> dict[str, Any]:
        params = self.task_params
        if self.task is not None:
            from airflow_provider_panda.tasks import build_task_params

            params = build_task_params(self.task, self.hook)
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError as exc:
                raise PandaInputError(f"task_params is not valid JSON after rendering: {exc}") from None
        params = dict(check_task_params(params))
        if "uniqueTaskName" not in params:
            params["uniqueTaskName"] = True
        elif params["uniqueTaskName"] is not True:
            self.log.warning("uniqueTaskName is false: PanDA will not refuse a second task of this name")
        params[OWNER_KEY] = task_instance_key(context)
        return params

    def execute(self, context: Context) -> Any:
        params = self._params(context)
        parent = None if self.parent_task_id in (None, "") else as_task_id(self.parent_task_id, "parent_task_id")
        task_id, stale = self._attach_or_submit(context, params, parent)
        if stale is not None:  # this try retried or re-executed the task: later waits look past the old status
            self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return task_id
        # a try that took over an earlier try's active task (a retry, a clear) may see it aborted by
        # that try's on_kill racing this start: it treats that as the "aborted" row (re-execute once)
        return self._wait(context, task_id, self.spec, self._end_time(), stale=stale, retries_done=0,
                          reattached=self._reattached)

    # --- whose task is it -----------------------------------------------------------------------

    def _attach_or_submit(self, context: Context, params: dict[str, Any],
                          parent: int | None) -> tuple[int, StaleMark | None]:
        """The task this instance submitted before (then what its status asks for), or a new one."""
        known = self._stored_task(context, params["taskName"])
        if known is None:
            mine, others = self._tasks_named(params)
            if mine:
                known = max(mine)
                self.log.info("Found PanDA task %s named %r, submitted by this task instance before", known,
                              params["taskName"])
            elif others:
                newest = max(others, key=lambda t: int(t["jediTaskID"]))
                return self._name_taken(context, params, parent, newest)
        if known is not None:
            self._remember(context, known, params["taskName"])
            task_id, stale = self._resume(params, known)
            if task_id != known:
                self._remember(context, task_id, params["taskName"])
            self._reattached = task_id == known and stale is None
            return task_id, stale
        return self._submit(context, params, parent)

    _reattached = False

    def _stored_task(self, context: Context, task_name: str) -> int | None:
        """The task an earlier try of this instance kept in the state store, if it has this taskName:
        a clear or retry under a new name (``{{ ti.try_number }}``) runs a new task."""
        store = _state_store(context)
        known = store.get(STATE_KEY) if store is not None else None
        if isinstance(known, dict):
            stored_name = known.get(STORED_NAME)
            if stored_name is not None and stored_name != task_name:
                self.log.info("This task instance's earlier PanDA task %s is named %r, not %r: not reattaching",
                              known.get(STORED_ID), stored_name, task_name)
                return None
            known = known.get(STORED_ID)
        return int(known) if known else None

    def _tasks_named(self, params: dict[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
        """This instance's tasks of that name, and the others (one request)."""
        from airflow_provider_panda.exceptions import PandaHTTPError

        try:
            tasks = self.hook.find_tasks_by_name(params["taskName"])
        except PandaHTTPError as exc:
            if exc.status_code not in (404, 405):
                raise
            self.log.warning("The server cannot look tasks up by name (%s): relying on its duplicate check", exc)
            return [], []
        owner = params[OWNER_KEY]
        mine = [int(t["jediTaskID"]) for t in tasks if (t.get("raw_task_params") or {}).get(OWNER_KEY) == owner]
        others = [t for t in tasks if int(t["jediTaskID"]) not in mine]
        return mine, others

    def _name_taken(self, context: Context, params: dict[str, Any], parent: int | None,
                    other: dict[str, Any]) -> tuple[int, StaleMark | None]:
        other_id, status = int(other["jediTaskID"]), other.get("status")
        if self.if_exists == "adopt":
            self.log.warning("taskName %r is held by PanDA task %s (%s), which this task instance did not submit; "
                             "adopting it (if_exists='adopt')", params["taskName"], other_id, status)
            self._remember(context, other_id, params["taskName"])
            task_id, stale = self._resume(params, other_id)
            if task_id != other_id:
                self._remember(context, task_id, params["taskName"])
            return task_id, stale
        if self.if_exists == "reexecute" and status in api.RESUBMITTABLE_FROM:
            self.log.warning("taskName %r is held by PanDA task %s (%s); re-executing it through PanDA's incremental "
                             "execution (if_exists='reexecute')", params["taskName"], other_id, status)
            stale = self._mark(other_id, status, "re-execution")
            task_id = self._reexecute(params, parent, other_id)
            self._remember(context, task_id, params["taskName"])
            return task_id, stale if task_id == other_id else None
        hint = ("it is still active, so it cannot be re-executed yet" if self.if_exists == "reexecute" else
                "make taskName unique per run and map index (e.g. include {{ run_id }} and {{ ti.map_index }}), "
                "or set if_exists='adopt' to wait on that task, or if_exists='reexecute' to re-run it on new input")
        error = PandaTaskNameTaken(
            f"taskName {params['taskName']!r} is already held by PanDA task {other_id} ({status}), which this "
            f"task instance did not submit; nothing was submitted: {hint}. Monitor: {self.hook.monitor_url(other_id)}",
            other_id, status)
        raise _fail_without_retry(str(error), error)

    # --- an earlier try's task --------------------------------------------------------------------

    def _resume(self, params: dict[str, Any], task_id: int) -> tuple[int, StaleMark | None]:
        """What an earlier try's task needs now: nothing (active or succeeded), a PanDA retry
        (failed, finished, exhausted), a re-execution (aborted) or the end (broken). Returns the
        task to wait on (the one PanDA's answer names) and what it said before the command."""
        status = self._settled_status(task_id)
        self.log.info("Reattached to PanDA task %s (%s)", task_id, status or "not visible yet")
        if status == "broken":
            self._broken(task_id)
        if status is None or self.spec.classify(status) != FAILURE:
            return task_id, None
        if status == "aborted":
            self.log.info("PanDA task %s was aborted: re-executing it through PanDA's incremental execution "
                          "(same task, same jediTaskID, a new attempt)", task_id)
            stale = self._mark(task_id, status, "re-execution")
            answered = self._reexecute(params, None, task_id)
            return answered, stale if answered == task_id else None
        if status in api.COMMAND_ALLOWED_FROM["retry"]:
            self.log.info("PanDA task %s ended %s before this try: asking PanDA to retry it", task_id, status)
            stale = self._mark(task_id, status, "retry")
            self.hook.retry_task(task_id, self.retry_new_params)
            return task_id, stale
        return task_id, None  # any other failing status: the wait reports it

    def _settled_status(self, task_id: int) -> str | None:
        """The status, once a task on its way to a known end (``toabort`` > ``aborted``) is there,
        within ``not_found_grace``; None at once for a task the server does not show yet."""
        watch = TaskWatch(task_id, WaitSpec.any(exclude=SETTLING), self.log, not_found_grace=0.0, progress=False)
        wait_until(watch, TaskSource(self.hook, task_id), min(self.poll_interval, 10.0),
                   time.time() + self.not_found_grace)
        return watch.last_status

    def _broken(self, task_id: int) -> None:
        """A broken task's definition cannot run: fail now, without spending Airflow retries."""
        from airflow_provider_panda.reports import task_failed

        report = task_failed(self.hook, task_id, "broken", self.log)
        raise _fail_without_retry(f"{report} No Airflow retry is spent on a broken task: fix its definition.", report)

    def _reexecute(self, params: dict[str, Any], parent: int | None, task_id: int) -> int:
        """Incremental execution: the same name submitted again re-runs the finished task. Returns
        the task PanDA's answer names, which the caller waits on and remembers.

        PanDA re-runs a name only when it checks it for duplicates (``uniqueTaskName`` and type
        ``anal``); any other submission of the name makes a second task, which would process all
        the input again into the same output containers: refused before anything is sent."""
        params = {**params, **(self.retry_new_params or {}), "uniqueTaskName": True}
        if not api.submission_is_repeatable(params):
            raise _fail_without_retry(
                f"PanDA task {task_id} cannot be re-executed: PanDA re-runs a task whose name is submitted again "
                f"(incremental execution) only for uniqueTaskName tasks of type "
                f"'{api.DUPLICATE_CHECKED_TASK_TYPE}', and this one is taskType {params.get('taskType')!r}, so a "
                f"submission would make a second task named {params['taskName']!r} that processes all its input "
                f"again. Nothing was submitted. To run the work again, give taskName a new value (e.g. include "
                f"{{{{ ti.try_number }}}}). Monitor: {self.hook.monitor_url(task_id)}")
        answer = self.hook.submit(params, parent)
        if answer.task_id == task_id and answer.reexecuted:
            return task_id
        self.log.warning("PanDA answered the re-execution of task %s with task %s: %s; waiting on task %s",
                         task_id, answer.task_id, answer.message, answer.task_id)
        if answer.reexecuted and not self._is_mine(answer.task_id, params):
            raise self._held_by_another(params, answer.task_id, "PanDA re-executes that task instead")
        return answer.task_id

    def _submit(self, context: Context, params: dict[str, Any], parent: int | None) -> tuple[int, StaleMark | None]:
        """A first submission: a duplicate or re-execution answer means the name was taken meanwhile
        (or the lookup missed a task JEDI had not refined yet: it is listed under another name)."""
        try:
            answer = self.hook.submit(params, parent)
        except PandaDuplicateTaskError as exc:
            if exc.task_id is None:
                raise self._held_by_another(params, None, exc.server_message.split(". ")[0], exc) from None
            info = self._visible_info(exc.task_id)
            if not _submitted_by(info, params):  # another's task: if_exists decides, as when the lookup finds it
                return self._name_taken(context, params, parent, info)
            self.log.info("PanDA already has task %s, submitted by this task instance", exc.task_id)
            self._remember(context, exc.task_id, params["taskName"])
            return exc.task_id, None
        if answer.from_resend and not self._is_mine(answer.task_id, params):
            # the first send got no answer; another submitter's task took the name before the resend
            raise self._held_by_another(params, answer.task_id, "PanDA's answer to a resend after a lost answer: "
                                        f"{answer.message.split('. ')[0]}")
        if answer.reexecuted:  # a finished task older than the lookup window held the name
            raise _fail_without_retry(
                f"taskName {params['taskName']!r} belongs to PanDA task {answer.task_id}, which this task instance did "
                f"not submit (it is older than PanDA's {api.LOOKUP_WINDOW_DAYS}-day name lookup), and PanDA answered "
                f"the submission by re-executing it: {answer.message}. It is not adopted; make taskName unique. "
                f"Monitor: {self.hook.monitor_url(answer.task_id)}")
        self._remember(context, answer.task_id, params["taskName"])
        return answer.task_id, None

    def _held_by_another(self, params: dict[str, Any], task_id: int | None, why: str,
                         cause: Exception | None = None) -> Exception:
        return _fail_without_retry(
            f"taskName {params['taskName']!r} is already held by PanDA task {task_id}, which this task instance "
            f"did not submit ({why}); make taskName unique", cause)

    def _is_mine(self, task_id: int, params: dict[str, Any]) -> bool:
        """Whether a task carries this instance's key (waiting for a DEFT-only task to appear)."""
        return _submitted_by(self._visible_info(task_id), params)

    def _visible_info(self, task_id: int) -> dict[str, Any]:
        """The task's details once JEDI has it refined (its parameters and owner are set by then)."""
        self._await_visible(task_id)
        return self.hook.get_task_info(task_id)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, retries_done: int = 0, reattached: bool = False,
                  attempts: Sequence[dict[str, Any]] = (), **resume: Any) -> Any:
        attempts = list(attempts or ())
        if verdict == FAILURE and status == "aborted" and reattached:
            self.log.info("PanDA task %s was aborted while this try waited on it (the earlier try's cancel_on_kill "
                          "after a clear or a kill): re-executing it through PanDA's incremental execution", task_id)
            params = self._params(context)
            stale = self._mark(task_id, status, "re-execution")
            answered = self._reexecute(params, None, task_id)
            if answered != task_id:
                self._remember(context, answered, params["taskName"])
                stale = None
            else:
                self._sent(context, task_id, stale)
            return self._wait(context, answered, self.spec, end_time, stale=stale, retries_done=retries_done,
                              attempts=attempts)
        if verdict == FAILURE and retries_done < self.auto_retries and status in api.COMMAND_ALLOWED_FROM["retry"]:
            from airflow_provider_panda.reports import failed_attempt

            attempt, info = failed_attempt(self.hook, task_id, status, self.log)
            stale = StaleMark.of(status, info, "retry")
            try:
                self.hook.retry_task(task_id, self.retry_new_params)
            except PandaCommandRejected as exc:
                self.log.warning("PanDA refused to retry task %s: %s", task_id, exc.server_message)
            else:
                self._sent(context, task_id, stale)
                attempt["retried_with"] = dict(self.retry_new_params or {})
                self.log.warning("PanDA task %s: %s; automatic retry %d of %d%s", task_id, attempt_line(attempt),
                                 retries_done + 1, self.auto_retries,
                                 f" with {attempt['retried_with']}" if attempt["retried_with"] else "")
                return self._wait(context, task_id, self.spec, end_time, stale=stale, retries_done=retries_done + 1,
                                  attempts=[*attempts, attempt])
        if verdict == FAILURE and status == "broken":
            self._broken(task_id)
        return super()._conclude(context, task_id, verdict, status, end_time=end_time, attempts=attempts)


class RetryTaskOperator(_PandaTaskWaiter):
    """Retry a PanDA task's failed work (optionally with new parameters), and optionally wait.

    Returns the jediTaskID. A task that is already ``done`` has nothing to retry: that is success.
    """

    publishes_outputs = True

    template_fields: Sequence[str] = ("jedi_task_id", "new_params")
    template_fields_renderers = {"new_params": "json"}

    def __init__(self, *, jedi_task_id: int | str, new_params: dict[str, Any] | None = None,
                 wait_for_completion: bool = False, success_statuses: Sequence[str] = api.TASK_DEFAULT_SUCCESS,
                 allow_partial: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jedi_task_id = jedi_task_id
        self.new_params = new_params
        self.wait_for_completion = wait_for_completion
        self.spec = WaitSpec.build(success_statuses, allow_partial=allow_partial)

    def execute(self, context: Context) -> Any:
        task_id = as_task_id(self.jedi_task_id)
        self._remember(context, task_id)
        status = self._await_visible(task_id)
        stale = self._mark(task_id, status, "retry")
        try:
            self.log.info("PanDA: %s", self.hook.retry_task(task_id, self.new_params))
        except PandaCommandRejected:
            if self.spec.classify(status) != SUCCESS:
                raise
            self.log.info("PanDA task %s is already %s: nothing to retry", task_id, status)
            return self._conclude(context, task_id, SUCCESS, status)
        self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self.spec, self._end_time(), stale=stale)


class _TerminateTaskOperator(_PandaTaskWaiter):
    """Send kill or finish; a task already ended or ending counts as done. Returns the jediTaskID."""

    template_fields: Sequence[str] = ("jedi_task_id",)
    command = ""

    def __init__(self, *, jedi_task_id: int | str, wait_for_termination: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jedi_task_id = jedi_task_id
        self.wait_for_termination = wait_for_termination

    def _send(self, task_id: int) -> str:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        task_id = as_task_id(self.jedi_task_id)
        self._remember(context, task_id)
        status = self._await_visible(task_id)
        # PanDA only queues the command (JEDI's TaskCommando acts later): the status it found
        # (``exhausted``, say) must not end the wait after it, nor any wait downstream
        stale = self._mark(task_id, status, self.command)
        try:
            self.log.info("PanDA: %s", self._send(task_id))
        except PandaCommandRejected as exc:
            status = self._status(task_id)
            if exc.code != api.CommandCode.BAD_STATUS or not self._already_done(status):
                raise
            self.log.info("PanDA task %s is already %s: nothing to %s", task_id, status, self.command)
            return task_id
        self._sent(context, task_id, stale)
        if not self.wait_for_termination:
            return task_id
        return self._wait(context, task_id, WaitSpec(success=tuple(sorted(api.TASK_FINAL))), self._end_time(),
                          stale=stale)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, **resume: Any) -> Any:
        if verdict == SUCCESS:
            self.log.info("PanDA task %s ended %s", task_id, status)
            return task_id
        return super()._conclude(context, task_id, verdict, status, end_time=end_time, **resume)

    def _already_done(self, status: str | None) -> bool:
        return status in api.COMMAND_REFUSED_IN[self.command]

    def on_kill(self) -> None:
        """This operator does not own the task it commands: killing it only stops the wait."""
        if self._jedi_task_id is not None:
            self.log.info("The Airflow task was killed: stopped waiting on PanDA task %s (a %s already sent "
                          "stands)", self._jedi_task_id, self.command)


class KillTaskOperator(_TerminateTaskOperator):
    """Kill a PanDA task; killing a task that already ended (or is being aborted) succeeds."""

    command = "kill"

    def _send(self, task_id: int) -> str:
        return self.hook.kill_task(task_id)


class FinishTaskOperator(_TerminateTaskOperator):
    """Finish a PanDA task now (``soft``: let running jobs complete); an ended task succeeds."""

    command = "finish"

    def __init__(self, *, soft: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.soft = soft

    def _send(self, task_id: int) -> str:
        return self.hook.finish_task(task_id, soft=self.soft)


class FileRecoveryOperator(_PandaTaskWaiter):
    """Ask PanDA to recover a task's lost files, and optionally wait for the recovered task.

    Returns the URL of the recovery log. PanDA handles the request later (the task's status changes
    only when the recovery runs), so the wait, and every PanDA wait downstream, looks past the
    status the task had when the request was sent.

    :param dry_run: only report what would be recovered (nothing to wait for).
    :param wait_for_completion: wait until the task reaches a final status after the recovery.
    :param success_statuses: statuses that succeed (default ``("done",)``); ``allow_partial``: ``finished`` too.
    """

    publishes_outputs = True
    template_fields: Sequence[str] = ("jedi_task_id",)

    def __init__(self, *, jedi_task_id: int | str, dry_run: bool = False, wait_for_completion: bool = False,
                 success_statuses: Sequence[str] = api.TASK_DEFAULT_SUCCESS, allow_partial: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dry_run and wait_for_completion:
            raise PandaInputError("FileRecoveryOperator: a dry run recovers nothing, so there is nothing to wait "
                                  "for; drop wait_for_completion or dry_run")
        self.jedi_task_id = jedi_task_id
        self.dry_run = dry_run
        self.wait_for_completion = wait_for_completion
        self.spec = WaitSpec.build(success_statuses, allow_partial=allow_partial)

    def execute(self, context: Context) -> str:
        task_id = as_task_id(self.jedi_task_id)
        self._remember(context, task_id)
        status = self._await_visible(task_id)
        stale = None if self.dry_run else self._mark(task_id, status, "file recovery")
        url = self.hook.send_file_recovery_request(task_id, dry_run=self.dry_run)
        self.log.info("PanDA accepted the %sfile recovery request for task %s; log: %s",
                      "dry-run " if self.dry_run else "", task_id, url)
        if stale is None:
            return url
        self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return url
        return self._wait(context, task_id, self.spec, self._end_time(), stale=stale, recovery_log=url)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, recovery_log: str | None = None, **resume: Any) -> Any:
        super()._conclude(context, task_id, verdict, status, end_time=end_time, **resume)
        return recovery_log
