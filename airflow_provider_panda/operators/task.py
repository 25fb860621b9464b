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
from airflow_provider_panda.calls import check_id, check_task_params, finite
from airflow_provider_panda.compat import conf
from airflow_provider_panda.exceptions import (
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaError,
    PandaInputError,
    PandaNotFoundError,
    PandaTaskFailedError,
    PandaTimeoutError,
)
from airflow_provider_panda.links import MONITOR_URL_KEY, PandaTaskLink
from airflow_provider_panda.waiting import (
    ERROR,
    FAILURE,
    NOT_FOUND_GRACE,
    SUCCESS,
    TIMEOUT,
    TaskWatch,
    WaitSpec,
    failure_message,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_panda.hooks.panda import PandaHook

TASK_ID_KEY = "jedi_task_id"
STATE_KEY = "panda_jedi_task_id"
ON_TIMEOUT = ("fail", "kill", "finish")
MAX_POLL_INTERVAL = 24 * 3600.0


def as_task_id(value: Any, what: str = "jedi_task_id") -> int:
    """A jediTaskID from an int or a rendered template string such as ``"12345"``."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return check_id(value, what)


def task_failed(hook: PandaHook, task_id: int, status: str | None) -> PandaTaskFailedError:
    """The error a failed wait raises: status, failed jobs, commonest job errors, monitor link."""
    return PandaTaskFailedError(failure_message(task_id, status, hook.get_task_jobs(task_id),
                                                hook.monitor_url(task_id)), task_id, status or "unknown")


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class _PandaTaskWaiter(BaseOperator):
    """What every PanDA operator shares: the connection, the monitor link and the wait."""

    operator_extra_links = (PandaTaskLink(),)
    ui_color = "#e6f0ff"

    def __init__(
        self,
        *,
        panda_conn_id: str = "panda_default",
        deferrable: bool | None = None,
        poll_interval: float = 60.0,
        timeout: float | None = None,
        on_timeout: str = "fail",
        cancel_on_kill: bool = False,
        not_found_grace: float = NOT_FOUND_GRACE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.panda_conn_id = panda_conn_id
        self.not_found_grace = finite(not_found_grace, "not_found_grace", 0)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = finite(poll_interval, "poll_interval", 0.01, MAX_POLL_INTERVAL)
        self.timeout = None if timeout is None else finite(timeout, "timeout", 0.01)
        if on_timeout not in ON_TIMEOUT:
            raise PandaInputError(f"on_timeout must be one of {ON_TIMEOUT}, got {on_timeout!r}")
        self.on_timeout = on_timeout
        self.cancel_on_kill = cancel_on_kill
        self._jedi_task_id: int | None = None

    @cached_property
    def hook(self) -> PandaHook:
        from airflow_provider_panda.hooks.panda import PandaHook

        return PandaHook(self.panda_conn_id)

    def _remember(self, context: Context, task_id: int) -> None:
        """Make the id known at once: XComs for users and the link, the state store for retries."""
        self._jedi_task_id = task_id
        ti = context["ti"]
        ti.xcom_push(key=TASK_ID_KEY, value=task_id)
        ti.xcom_push(key=MONITOR_URL_KEY, value=self.hook.monitor_url(task_id))
        store = _state_store(context)
        if store is not None:
            try:
                from airflow.sdk.execution_time.context import NEVER_EXPIRE

                store.set(STATE_KEY, task_id, retention=NEVER_EXPIRE)
            except ImportError:  # pragma: no cover - state store without NEVER_EXPIRE
                store.set(STATE_KEY, task_id)

    def _status(self, task_id: int) -> str | None:
        try:
            return self.hook.get_task_status(task_id)
        except PandaNotFoundError:
            return None

    def _await_visible(self, task_id: int) -> str:
        """A just-submitted task is only in DEFT for a while: the server refuses commands on it
        ("not the task owner") until JEDI has it. Wait for that, within ``not_found_grace``."""
        deadline = time.monotonic() + self.not_found_grace
        while (status := self._status(task_id)) is None:
            if time.monotonic() > deadline:
                raise PandaNotFoundError(f"PanDA task {task_id} is not known to the server "
                                         f"(waited {self.not_found_grace:.0f} s for it to appear)")
            self.log.info("PanDA task %s is not visible yet (queued in DEFT); waiting", task_id)
            time.sleep(min(self.poll_interval, 10.0))
        return status

    def _wait(self, context: Context, task_id: int, spec: WaitSpec, end_time: float | None,
              stale_status: str | None = None, **resume: Any) -> Any:
        """Wait in the worker or defer to the triggerer; both end in :meth:`_conclude`."""
        if self.deferrable:
            from airflow_provider_panda.triggers.task import PandaTaskTrigger

            self.defer(
                trigger=PandaTaskTrigger(
                    jedi_task_id=task_id, panda_conn_id=self.panda_conn_id, poll_interval=self.poll_interval,
                    success_statuses=spec.success, failure_statuses=spec.failure, end_time=end_time,
                    cancel_on_kill=self.cancel_on_kill, stale_status=stale_status,
                    carry={"end_time": end_time, **resume},
                ),
                method_name="execute_complete",
                kwargs={"end_time": end_time, **resume},
            )
        watch = TaskWatch(task_id, spec, self.log, stale_status=stale_status)
        while True:
            status = self._status(task_id)
            verdict = watch.observe(status)
            if watch.moved:
                watch.log_jobs(self.hook.get_task_jobs(task_id))
            if verdict is None and end_time is not None and time.time() >= end_time:
                verdict = TIMEOUT
            if verdict is not None:
                return self._conclude(context, task_id, verdict, status, end_time=end_time, **resume)
            time.sleep(self.poll_interval)

    def execute_complete(self, context: Context, event: dict[str, Any], end_time: float | None = None,
                         **resume: Any) -> Any:
        """Resume after the trigger fired; the state the trigger carried wins over method kwargs."""
        task_id = int(event["jedi_task_id"])
        self._jedi_task_id = task_id
        state = {"end_time": end_time, **resume, **(event.get("carry") or {})}
        if event["status"] == ERROR:
            raise PandaError(event.get("message") or f"waiting on PanDA task {task_id} failed")
        return self._conclude(context, task_id, event["status"], event.get("task_status"), **state)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, **resume: Any) -> Any:
        if verdict == SUCCESS:
            self.log.info("PanDA task %s ended %s: %s", task_id, status, self.hook.monitor_url(task_id))
            return task_id
        if verdict == TIMEOUT:
            self._act_on_timeout(task_id, status)
        if verdict == ERROR:
            raise PandaError(f"PanDA task {task_id} is not known to the server")
        raise task_failed(self.hook, task_id, status)

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
        raise PandaTimeoutError(f"PanDA task {task_id} was still {status} after {self.timeout} s{action}. "
                                f"Monitor: {self.hook.monitor_url(task_id)}")

    def on_kill(self) -> None:
        """Killing the Airflow task kills the PanDA task when ``cancel_on_kill`` is set."""
        if not self.cancel_on_kill or self._jedi_task_id is None:
            return
        try:
            self.hook.kill_task(self._jedi_task_id)
            self.log.info("Killed PanDA task %s", self._jedi_task_id)
        except PandaCommandRejected as exc:
            self.log.info("PanDA task %s not killed: %s", self._jedi_task_id, exc.server_message)
        except PandaError:
            self.log.warning("Could not kill PanDA task %s", self._jedi_task_id, exc_info=True)

    def _end_time(self) -> float | None:
        return None if self.timeout is None else time.time() + self.timeout


def _state_store(context: Context) -> Any:
    """Airflow >= 3.3's per-task store that survives retries (AIP-103), or None."""
    try:
        return context.get("task_state_store")  # type: ignore[union-attr]
    except Exception:  # pragma: no cover - a context without it
        return None


class SubmitTaskOperator(_PandaTaskWaiter):
    """Submit a PanDA task and (by default) wait until it reaches a final status.

    Returns the jediTaskID (XCom ``return_value``); pushes ``jedi_task_id`` and the monitor URL as
    soon as the task exists. An Airflow retry never submits a second task for the same work: it
    reattaches to the task it submitted before (task state store on Airflow >= 3.3, else the
    server's answer for the same ``taskName``), and retries it in PanDA only if it failed.

    :param task_params: the task parameters (dict), or a ``.json`` template file; templated. The
        operator sets ``uniqueTaskName: true`` unless given, so a repeat is answered as a duplicate:
        make ``taskName`` unique per run (e.g. include ``{{ run_id }}``).
    :param wait_for_completion: wait until a final status, else return after submitting.
    :param success_statuses: statuses that succeed (default ``("done",)``).
    :param allow_partial: ``finished`` (some jobs failed) succeeds too.
    :param auto_retries: on a failing status, ask PanDA to retry the task up to this many times.
    :param retry_new_params: parameters merged into the task on each automatic retry.
    :param timeout: seconds to wait before ``on_timeout`` acts (``fail``, ``kill``, ``finish``).
    :param cancel_on_kill: kill the PanDA task when the Airflow task is killed.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("task_params", "retry_new_params", "parent_task_id")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"task_params": "json", "retry_new_params": "json"}

    def __init__(
        self,
        *,
        task_params: dict[str, Any] | str,
        wait_for_completion: bool = True,
        success_statuses: Sequence[str] = api.TASK_DEFAULT_SUCCESS,
        allow_partial: bool = False,
        auto_retries: int = 0,
        retry_new_params: dict[str, Any] | None = None,
        parent_task_id: int | str | None = None,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(cancel_on_kill=cancel_on_kill, **kwargs)
        if not isinstance(task_params, (dict, str)):
            raise PandaInputError(f"task_params must be a dict or a .json file, got {type(task_params).__name__}")
        if isinstance(auto_retries, bool) or not isinstance(auto_retries, int) or not 0 <= auto_retries <= 100:
            raise PandaInputError(f"auto_retries must be an integer from 0 to 100, got {auto_retries!r}")
        self.task_params = task_params
        self.wait_for_completion = wait_for_completion
        self.spec = WaitSpec.build(success_statuses, allow_partial=allow_partial)
        self.success_statuses = self.spec.success
        self.allow_partial = allow_partial
        self.auto_retries = auto_retries
        self.retry_new_params = retry_new_params
        self.parent_task_id = parent_task_id

    def _params(self) -> dict[str, Any]:
        params = self.task_params
        if isinstance(params, str):
            try:
                params = json.loads(params)
            except ValueError as exc:
                raise PandaInputError(f"task_params is not valid JSON after rendering: {exc}") from None
        params = dict(check_task_params(params))
        if "uniqueTaskName" not in params:
            params["uniqueTaskName"] = True
        elif params["uniqueTaskName"] is not True:
            self.log.warning("uniqueTaskName is false: an Airflow retry cannot recognise the task it submitted")
        return params

    def execute(self, context: Context) -> Any:
        params = self._params()
        parent = None if self.parent_task_id in (None, "") else as_task_id(self.parent_task_id, "parent_task_id")
        stale = None
        task_id = self._previous_task(context, params)
        if task_id is not None:
            status = self._status(task_id)
            self.log.info("Reattached to PanDA task %s (%s) submitted by an earlier try", task_id, status)
            if self.spec.classify(status) == FAILURE:
                task_id, stale = self._recover(params, parent, task_id, status)
        else:
            task_id = self._submit(params, parent)
        self._remember(context, task_id)
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self.spec, self._end_time(), stale_status=stale, retries_done=0)

    def _previous_task(self, context: Context, params: dict[str, Any]) -> int | None:
        """The task an earlier try of this Airflow task submitted, if any."""
        store = _state_store(context)
        if store is not None:
            known = store.get(STATE_KEY)
            if known:
                return int(known)
        ti = context["ti"]
        if getattr(ti, "try_number", 1) <= 1 or params.get("uniqueTaskName") is not True:
            return None
        dag_run = context.get("dag_run")
        start = getattr(dag_run, "start_date", None) or getattr(dag_run, "logical_date", None)
        if start is None:
            return None
        from datetime import timedelta, timezone

        since = start.astimezone(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
        try:
            tasks = self.hook.get_tasks_modified_since(since)
        except PandaError as exc:
            self.log.warning("Could not look for an earlier submission (%s); submitting", exc)
            return None
        same = [tid for tid, info in tasks.items() if info.get("taskName") == params["taskName"]]
        return max(same) if same else None

    def _submit(self, params: dict[str, Any], parent: int | None) -> int:
        try:
            return self.hook.submit_task(params, parent)
        except PandaDuplicateTaskError as exc:
            if exc.task_id is None:
                raise
            self.log.warning("PanDA already has task %s named %r (%s); reattaching to it",
                             exc.task_id, params["taskName"], exc.server_message.split(".")[0])
            return exc.task_id

    def _recover(self, params: dict[str, Any], parent: int | None, task_id: int,
                 status: str | None) -> tuple[int, str | None]:
        """An earlier try's task failed: retry it in PanDA if it can be, else resubmit."""
        if status in api.COMMAND_ALLOWED_FROM["retry"]:
            self.log.info("PanDA task %s ended %s before this Airflow retry: asking PanDA to retry it", task_id,
                          status)
            self.hook.retry_task(task_id, self.retry_new_params)
            return task_id, status
        self.log.info("PanDA task %s ended %s and cannot be retried: resubmitting", task_id, status)
        return self._submit(params, parent), None

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, retries_done: int = 0, **resume: Any) -> Any:
        if verdict == FAILURE and retries_done < self.auto_retries and status in api.COMMAND_ALLOWED_FROM["retry"]:
            try:
                self.hook.retry_task(task_id, self.retry_new_params)
            except PandaCommandRejected as exc:
                self.log.warning("PanDA refused to retry task %s: %s", task_id, exc.server_message)
            else:
                self.log.info("PanDA task %s ended %s: automatic retry %d of %d", task_id, status,
                              retries_done + 1, self.auto_retries)
                return self._wait(context, task_id, self.spec, end_time, stale_status=status,
                                  retries_done=retries_done + 1)
        return super()._conclude(context, task_id, verdict, status, end_time=end_time)


class RetryTaskOperator(_PandaTaskWaiter):
    """Retry a PanDA task's failed work (optionally with new parameters), and optionally wait.

    A task that is already ``done`` has nothing to retry: that is success, not an error.
    """

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
        try:
            self.log.info("PanDA: %s", self.hook.retry_task(task_id, self.new_params))
        except PandaCommandRejected:
            if self.spec.classify(status) != SUCCESS:
                raise
            self.log.info("PanDA task %s is already %s: nothing to retry", task_id, status)
            return task_id
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self.spec, self._end_time(), stale_status=status)


class _TerminateTaskOperator(_PandaTaskWaiter):
    """Send kill or finish; a task already ended or ending counts as done."""

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
        self._await_visible(task_id)
        try:
            self.log.info("PanDA: %s", self._send(task_id))
        except PandaCommandRejected as exc:
            status = self._status(task_id)
            if exc.code != api.CommandCode.BAD_STATUS or not self._already_done(status):
                raise
            self.log.info("PanDA task %s is already %s: nothing to %s", task_id, status, self.command)
            return status
        if not self.wait_for_termination:
            return None
        return self._wait(context, task_id, WaitSpec(success=tuple(sorted(api.TASK_FINAL))), self._end_time())

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, **resume: Any) -> Any:
        if verdict == SUCCESS:
            self.log.info("PanDA task %s ended %s", task_id, status)
            return status
        return super()._conclude(context, task_id, verdict, status, end_time=end_time)

    def _already_done(self, status: str | None) -> bool:
        return status in api.COMMAND_REFUSED_IN[self.command]


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
    """Ask PanDA to recover a task's lost files; returns the URL of the recovery log."""

    template_fields: Sequence[str] = ("jedi_task_id",)

    def __init__(self, *, jedi_task_id: int | str, dry_run: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jedi_task_id = jedi_task_id
        self.dry_run = dry_run

    def execute(self, context: Context) -> str:
        task_id = as_task_id(self.jedi_task_id)
        self._remember(context, task_id)
        self._await_visible(task_id)
        url = self.hook.send_file_recovery_request(task_id, dry_run=self.dry_run)
        self.log.info("PanDA accepted the file recovery request for task %s; log: %s", task_id, url)
        return url
