"""SubmitTaskOperator: submit a PanDA task, own it across Airflow retries and clears, wait on it.

The decisions (whose task, what an earlier try's task needs, what a failure asks for) are
:mod:`airflow_provider_panda.ownership`'s; this module reads the facts and carries them out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_provider_panda import api, arguments, ownership
from airflow_provider_panda.calls import as_task_id, check_task_params
from airflow_provider_panda.exceptions import (
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaError,
    PandaInputError,
    PandaTaskNameTaken,
)
from airflow_provider_panda.operators.base import PandaWaitingOperator, fail_without_retry
from airflow_provider_panda.ownership import Attached
from airflow_provider_panda.waiting import FAILURE, StaleMark, TaskSource, TaskWatch, WaitSpec, wait_until

if TYPE_CHECKING:
    from airflow.sdk import Context


def task_instance_key(context: Context) -> str:
    """The owner key of the task instance running with ``context`` (:func:`ownership.instance_key`)."""
    ti = context["ti"]
    return ownership.instance_key(ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1))


class _Followed(NamedTuple):
    """What following the retry policy came to: a new wait's outcome, or the failure standing."""

    attempts: list[dict[str, Any]]
    hopeless: bool = False
    result: Any = None
    waited: bool = False


def _state_store(context: Context) -> Any:
    """Airflow >= 3.3's per-task store that survives retries and clears (AIP-103), or None."""
    return context.get("task_state_store")  # type: ignore[union-attr]


class SubmitTaskOperator(PandaWaitingOperator):
    """Submit a PanDA task and (by default) wait until it reaches a final status.

    Returns the jediTaskID (XCom ``return_value``); pushes ``jedi_task_id`` and the monitor URL as
    soon as the task exists. A task instance (dag_id, task_id, run_id, map_index) owns the PanDA
    tasks it submitted, and only those (:mod:`airflow_provider_panda.ownership`): a later try or a
    clear finds its task (task state store, else a lookup by taskName) and never adopts or
    re-executes another one unless ``if_exists`` says so.

    :param panda_task: a :class:`~airflow_provider_panda.builder.PrunTask` (or a dict of its
        fields): the map prun would make for it, with its sandbox uploaded; its fields are templated.
    :param task_params: instead of ``panda_task``, the raw task parameters (dict), or a ``.json``
        template file; templated. ``uniqueTaskName: true`` is set unless given. Make ``taskName``
        unique per run and map index (e.g. include ``{{ run_id }}`` and ``{{ ti.map_index }}``).
    :param parent_task_id: the jediTaskID of the parent task (templated).
    :param wait_for_completion: wait until a final status (default), else return after submitting.
    :param success_statuses: statuses that succeed (default ``("done",)``); ``failure_statuses``:
        those that fail at once (default: every stop status that is not a success).
    :param allow_partial: ``finished`` (some jobs failed) succeeds too.
    :param auto_retries: on a failing status, ask PanDA to retry the task up to this many times.
    :param retry_new_params: parameters merged into the task on each PanDA retry (only keys PanDA
        applies on a retry, :data:`~airflow_provider_panda.retry_policy.RETRY_KEYS`).
    :param auto_retry_policy: instead of ``auto_retries``, a policy that reads why the attempt failed and
        decides (:class:`~airflow_provider_panda.retry_policy.DefaultRetryPolicy`: more memory, shorter
        jobs, other sites, no retry for the task's own code; or any ``policy(diagnosis, retries_so_far)``
        returning a :class:`~airflow_provider_panda.retry_policy.Decision`).
    :param if_exists: the taskName is held by a task this instance did not submit: ``fail``
        (default, before anything changes on the server), ``adopt`` (wait on that task as if it
        were ours) or ``reexecute`` (PanDA's incremental execution: re-run that finished task on
        new input; refused while it is still active).
    :param timeout: seconds to wait before ``on_timeout`` acts (``fail``, ``kill``, ``finish``).
    :param cancel_on_kill: kill the PanDA task when the Airflow task is killed (marked failed or
        success, cleared while running, or killed); default True.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).

    After a successful wait it pushes ``output_datasets`` (the output and log datasets with their
    file counts) and, for ``AssetAlias`` or ``rucio://`` outlets, asset events for the output
    datasets (:mod:`airflow_provider_panda.assets`).
    """

    publishes_outputs = True
    owns_task = True
    template_fields: Sequence[str] = ("task_params", "panda_task", "retry_new_params", "parent_task_id")
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"task_params": "json", "panda_task": "json", "retry_new_params": "json"}

    def __init__(
        self,
        *,
        panda_task: Any = None,
        task_params: dict[str, Any] | str | None = None,
        wait_for_completion: bool = True,
        auto_retries: int = 0,
        retry_new_params: dict[str, Any] | None = None,
        parent_task_id: int | str | None = None,
        if_exists: str = "fail",
        auto_retry_policy: Any = None,
        task: Any = None,
        **kwargs: Any,
    ) -> None:
        if task is not None:  # the old name, a real parameter so that partial() and expand() take it too
            arguments.renamed(type(self).__name__, "task", "panda_task")
            if panda_task is not None:
                raise PandaInputError("give panda_task (its old name: task), not both")
            panda_task = task
        super().__init__(wait_for_completion=wait_for_completion, **kwargs)
        if (task_params is None) == (panda_task is None):
            raise PandaInputError("give either panda_task (a PrunTask) or task_params, not both and not neither")
        if panda_task is not None:
            from airflow_provider_panda.builder import as_task

            panda_task = as_task(panda_task)
        elif not isinstance(task_params, (dict, str)):
            raise PandaInputError(f"task_params must be a dict or a .json file, got {type(task_params).__name__}")
        self.task_params = task_params
        self.panda_task = panda_task
        self.auto_retries = arguments.auto_retries(auto_retries)
        self.retry_new_params = retry_new_params
        # not ``retry_policy``: Airflow >= 3.3's BaseOperator has one, for Airflow's own retries
        self.auto_retry_policy = auto_retry_policy
        self._policy()  # a bad policy or retry parameter fails at DAG parse
        self.parent_task_id = parent_task_id
        self.if_exists = arguments.one_of(if_exists, "if_exists", ownership.IF_EXISTS)
        if not wait_for_completion and self._policy() is not None:
            arguments.no_effect(type(self).__name__, "auto_retries or auto_retry_policy",
                                "they act when a wait sees the task fail, and wait_for_completion is False")

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
        """The map to submit, checked, with this task instance's owner key."""
        params = self.task_params
        if self.panda_task is not None:
            from airflow_provider_panda.builder import build_task_params

            params = build_task_params(self.panda_task, self.hook)
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
        params[ownership.OWNER_KEY] = task_instance_key(context)
        return params

    def execute(self, context: Context) -> Any:
        params = self._params(context)
        parent = None if self.parent_task_id in (None, "") else as_task_id(self.parent_task_id, "parent_task_id")
        attached = self._attach_or_submit(context, params, parent)
        if attached.stale is not None:  # this try retried or re-executed the task: later waits look past it
            self._sent(context, attached.task_id, attached.stale)
        if not self.wait_for_completion:
            return attached.task_id
        # a try that took over an earlier try's active task (a retry, a clear) may see it aborted by
        # that try's on_kill racing this start: it treats that as the "aborted" row (re-execute once)
        return self._wait(context, attached.task_id, self._end_time(), stale=attached.stale, retries_done=0,
                          reattached=attached.reattached)

    def _remember(self, context: Context, task_id: int, task_name: str | None = None) -> None:
        """The XComs, and the state store for later tries (with the taskName it was submitted
        under, so a try under another name does not reuse it)."""
        super()._remember(context, task_id)
        store = _state_store(context)
        if store is not None and task_name is not None:
            from airflow_provider_panda.compat import NEVER_EXPIRE

            store.set(ownership.STATE_KEY, ownership.stored_entry(task_id, task_name), retention=NEVER_EXPIRE)

    # --- whose task is it -----------------------------------------------------------------------

    def _attach_or_submit(self, context: Context, params: dict[str, Any], parent: int | None) -> Attached:
        """The task this instance submitted before (then what its status asks for), or a new one."""
        known = self._stored_task(context, params["taskName"])
        if known is None:
            mine, others = self._tasks_named(params)
            if mine:
                known = max(mine)
                self.log.info("Found PanDA task %s named %r, submitted by this task instance before", known,
                              params["taskName"])
            elif others:
                return self._name_taken(context, params, parent, ownership.newest(others))
        if known is None:
            return self._submit(context, params, parent)
        self._remember(context, known, params["taskName"])
        attached = self._take_over(params, known, earlier_try=True)
        if attached.task_id != known:
            self._remember(context, attached.task_id, params["taskName"])
        return attached

    def _stored_task(self, context: Context, task_name: str) -> int | None:
        """The task an earlier try of this instance kept in the state store under this taskName."""
        store = _state_store(context)
        known, other_name = ownership.stored_task(store.get(ownership.STATE_KEY) if store is not None else None,
                                                  task_name)
        if other_name is not None:
            self.log.info("This task instance's earlier PanDA task is named %r, not %r: not reattaching",
                          other_name, task_name)
        return known

    def _tasks_named(self, params: dict[str, Any]) -> tuple[list[int], list[Any]]:
        """This instance's tasks of that name, and the others (one request)."""
        from airflow_provider_panda.exceptions import PandaHTTPError

        try:
            tasks = self.hook.find_tasks_by_name(params["taskName"])
        except PandaHTTPError as exc:
            if exc.status_code not in (404, 405):
                raise
            self.log.warning("The server cannot look tasks up by name (%s): relying on its duplicate check", exc)
            return [], []
        return ownership.split_by_owner(tasks, params[ownership.OWNER_KEY])

    def _name_taken(self, context: Context, params: dict[str, Any], parent: int | None,
                    other: Any) -> Attached:
        other_id, status = int(other["jediTaskID"]), other.get("status")
        action = ownership.when_name_taken(self.if_exists, status)
        if action == ownership.ADOPT:
            self.log.warning("taskName %r is held by PanDA task %s (%s), which this task instance did not submit; "
                             "adopting it (if_exists='adopt')", params["taskName"], other_id, status)
            self._remember(context, other_id, params["taskName"])
            attached = self._take_over(params, other_id, earlier_try=False)
            if attached.task_id != other_id:
                self._remember(context, attached.task_id, params["taskName"])
            return attached
        if action == ownership.REEXECUTE:
            self.log.warning("taskName %r is held by PanDA task %s (%s); re-executing it through PanDA's incremental "
                             "execution (if_exists='reexecute')", params["taskName"], other_id, status)
            stale = self._mark(other_id, status, "re-execution")
            task_id = self._reexecute(params, parent, other_id)
            self._remember(context, task_id, params["taskName"])
            return Attached(task_id, stale if task_id == other_id else None)
        error = PandaTaskNameTaken(
            f"taskName {params['taskName']!r} is already held by PanDA task {other_id} ({status}), which this "
            f"task instance did not submit; nothing was submitted: {ownership.name_taken_hint(self.if_exists)}. "
            f"Monitor: {self.hook.monitor_url(other_id)}", other_id, status)
        raise fail_without_retry(str(error), error)

    # --- an earlier try's task --------------------------------------------------------------------

    def _take_over(self, params: dict[str, Any], task_id: int, earlier_try: bool) -> Attached:
        """Do what an earlier try's task (or an adopted one) needs now (:func:`ownership.for_earlier_task`).
        Returns the task to wait on (the one PanDA's answer names), what it said before a command
        sent, and whether it is an earlier try's task taken over as it was (whose abort by that
        try's ``cancel_on_kill`` this try re-executes once: never an adopted task's)."""
        status = self._settled_status(task_id)
        self.log.info("Reattached to PanDA task %s (%s)", task_id, status or "not visible yet")
        action = ownership.for_earlier_task(status, self.spec)
        if action == ownership.BROKEN:
            self._broken(task_id)
        if action == ownership.REEXECUTE:
            self.log.info("PanDA task %s was aborted: re-executing it through PanDA's incremental execution "
                          "(same task, same jediTaskID, a new attempt)", task_id)
            stale = self._mark(task_id, status, "re-execution")
            answered = self._reexecute(params, None, task_id)
            return Attached(answered, stale if answered == task_id else None)
        if action == ownership.RETRY:
            self.log.info("PanDA task %s ended %s before this try: asking PanDA to retry it", task_id, status)
            stale = self._mark(task_id, status, "retry")
            self.hook.retry_task(task_id, self.retry_new_params)
            return Attached(task_id, stale)
        return Attached(task_id, reattached=earlier_try)

    def _settled_status(self, task_id: int) -> str | None:
        """The status, once a task on its way to a known end (``toabort`` > ``aborted``) is there,
        within ``not_found_grace``; None at once for a task the server does not show yet."""
        watch = TaskWatch(task_id, WaitSpec.any(exclude=ownership.SETTLING), self.log, not_found_grace=0.0,
                          progress=False)
        wait_until(watch, TaskSource(self.hook, task_id), min(self.poll_interval, 10.0),
                   time.time() + self.not_found_grace)
        return watch.last_status

    def _broken(self, task_id: int) -> None:
        """A broken task's definition cannot run: fail now, without spending Airflow retries."""
        from airflow_provider_panda.reports import task_failed

        report = task_failed(self.hook, task_id, "broken", self.log)
        raise fail_without_retry(f"{report} No Airflow retry is spent on a broken task: fix its definition.", report)

    def _reexecute(self, params: dict[str, Any], parent: int | None, task_id: int) -> int:
        """Incremental execution: the same name submitted again re-runs the finished task. Returns
        the task PanDA's answer names, which the caller waits on and remembers.

        PanDA re-runs a name only when it checks it for duplicates (``uniqueTaskName`` and type
        ``anal``); any other submission of the name makes a second task, which would process all
        the input again into the same output containers: refused before anything is sent."""
        params = ownership.reexecution_params(params, self.retry_new_params)
        if not api.submission_is_repeatable(params):
            raise fail_without_retry(
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

    def _submit(self, context: Context, params: dict[str, Any], parent: int | None) -> Attached:
        """A first submission: a duplicate or re-execution answer means the name was taken meanwhile
        (or the lookup missed a task JEDI had not refined yet: it is listed under another name)."""
        try:
            answer = self.hook.submit(params, parent)
        except PandaDuplicateTaskError as exc:
            if exc.task_id is None:
                raise self._held_by_another(params, None, exc.server_message.split(". ")[0], exc) from None
            info = self._visible_info(exc.task_id)
            if not ownership.submitted_by(info, params[ownership.OWNER_KEY]):  # another's: if_exists decides
                return self._name_taken(context, params, parent, info)
            self.log.info("PanDA already has task %s, submitted by this task instance", exc.task_id)
            self._remember(context, exc.task_id, params["taskName"])
            return Attached(exc.task_id)
        if answer.from_resend and not self._is_mine(answer.task_id, params):
            # the first send got no answer; another submitter's task took the name before the resend
            raise self._held_by_another(params, answer.task_id, "PanDA's answer to a resend after a lost answer: "
                                        f"{answer.message.split('. ')[0]}")
        if answer.reexecuted:  # a finished task older than the lookup window held the name
            raise fail_without_retry(
                f"taskName {params['taskName']!r} belongs to PanDA task {answer.task_id}, which this task instance did "
                f"not submit (it is older than PanDA's {api.LOOKUP_WINDOW_DAYS}-day name lookup), and PanDA answered "
                f"the submission by re-executing it: {answer.message}. It is not adopted; make taskName unique. "
                f"Monitor: {self.hook.monitor_url(answer.task_id)}")
        self._remember(context, answer.task_id, params["taskName"])
        return Attached(answer.task_id)

    def _held_by_another(self, params: dict[str, Any], task_id: int | None, why: str,
                         cause: Exception | None = None) -> Exception:
        return fail_without_retry(
            f"taskName {params['taskName']!r} is already held by PanDA task {task_id}, which this task instance "
            f"did not submit ({why}); make taskName unique", cause)

    def _is_mine(self, task_id: int, params: dict[str, Any]) -> bool:
        """Whether a task carries this instance's key (waiting for a DEFT-only task to appear)."""
        return ownership.submitted_by(self._visible_info(task_id), params[ownership.OWNER_KEY])

    def _visible_info(self, task_id: int) -> dict[str, Any]:
        """The task's details once JEDI has it refined (its parameters and owner are set by then)."""
        self._await_visible(task_id)
        return self.hook.get_task_info(task_id)

    # --- the wait's end ---------------------------------------------------------------------------

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, retries_done: int = 0, reattached: bool = False,
                  attempts: Sequence[dict[str, Any]] = (), **carried: Any) -> Any:
        attempts = list(attempts or ())
        action = ownership.FAIL
        if verdict == FAILURE:
            action = ownership.after_failure(status, reattached=reattached, retries_done=retries_done,
                                             has_policy=self._policy() is not None)
        if action == ownership.REEXECUTE:
            return self._reexecute_aborted(context, task_id, end_time, retries_done, attempts)
        if action == ownership.RETRY:
            followed = self._follow_policy(context, task_id, status, end_time, retries_done, attempts)
            if followed.waited:
                return followed.result
            attempts = followed.attempts
            if followed.hopeless:  # the task's own code fails everywhere: no Airflow retry either
                from airflow_provider_panda.reports import task_failed

                report = task_failed(self.hook, task_id, status, self.log, attempts)
                raise fail_without_retry(f"{report} No Airflow retry is spent on it.", report)
        if action == ownership.BROKEN:
            self._broken(task_id)
        return super()._conclude(context, task_id, verdict, status, end_time=end_time, attempts=attempts)

    def _reexecute_aborted(self, context: Context, task_id: int, end_time: float | None, retries_done: int,
                           attempts: list[dict[str, Any]]) -> Any:
        """The earlier try's task was aborted while this try waited on it: re-execute it once, with
        the parameters PanDA holds for it (they carry this instance's key), and wait again."""
        self.log.info("PanDA task %s was aborted while this try waited on it (the earlier try's cancel_on_kill "
                      "after a clear or a kill): re-executing it through PanDA's incremental execution", task_id)
        try:
            info: dict[str, Any] | None = self.hook.get_task_info(task_id)
        except PandaError as exc:
            self.log.warning("Could not read PanDA task %s's details (%s): re-executing it with this try's "
                             "parameters", task_id, exc)
            info = None
        params = dict((info or {}).get("raw_task_params") or {})
        if not params.get("taskName"):
            params = self._params(context)  # a server that does not return the task's parameters
        params[ownership.OWNER_KEY] = task_instance_key(context)
        stale = StaleMark.of("aborted", info, "re-execution")
        answered = self._reexecute(params, None, task_id)
        if answered != task_id:
            self._remember(context, answered, params["taskName"])
            stale = None
        else:
            self._sent(context, task_id, stale)
        return self._wait(context, answered, end_time, stale=stale, retries_done=retries_done, attempts=attempts)

    def _policy(self) -> Any:
        """The PanDA retry policy this operator follows (auto_retry_policy, else auto_retries with the rendered
        retry_new_params), or None for no automatic retry."""
        from airflow_provider_panda.retry_policy import policy_for

        return policy_for(self.auto_retry_policy, self.auto_retries, self.retry_new_params)

    def _follow_policy(self, context: Context, task_id: int, status: str | None, end_time: float | None,
                       retries_done: int, attempts: list[dict[str, Any]]) -> _Followed:
        """Diagnose the failed attempt (task-level facts and a bounded sample of its jobs), ask the
        retry policy what to do, log the decision with its evidence, and do it: a retry (with the
        policy's parameters) or a file recovery, then wait again (the wait's outcome is returned).
        When the policy stops, or PanDA refuses what it asked: the earlier attempts, and whether the
        failure is the task's own code (then no Airflow retry helps either)."""
        from airflow_provider_panda import retry_policy as policies
        from airflow_provider_panda.diagnosis import diagnose
        from airflow_provider_panda.reports import failed_attempt

        attempt, info, jobs = failed_attempt(self.hook, task_id, status, self.log)
        diagnosis = diagnose(info, jobs, status=status)
        decision = self._policy()(diagnosis, retries_done)
        attempt["decision"] = decision.reason
        if decision.action not in (policies.RETRY, policies.RECOVER):
            self.log.warning("PanDA task %s: %s ended %s: %s", task_id, f"attempt {attempt['attempt']}", status,
                             decision.reason)
            return _Followed(attempts, decision.action == policies.STOP and decision.final)
        command = "retry" if decision.action == policies.RETRY else "file recovery"
        stale = StaleMark.of(status or "failed", info, command)
        try:
            if decision.action == policies.RETRY:
                self.hook.retry_task(task_id, decision.new_params or None)
            else:
                self.hook.send_file_recovery_request(task_id)
        except PandaCommandRejected as exc:
            self.log.warning("PanDA refused the %s of task %s: %s", command, task_id, exc.server_message)
            return _Followed(attempts)
        self._sent(context, task_id, stale)
        attempt["retried_with"] = dict(decision.new_params) if decision.action == policies.RETRY else {}
        attempt["action"] = decision.action
        self.log.warning("PanDA task %s: attempt %s ended %s: %s (automatic %s %d)", task_id, attempt["attempt"],
                         status, decision.reason, command, retries_done + 1)
        result = self._wait(context, task_id, end_time, stale=stale, retries_done=retries_done + 1,
                            attempts=[*attempts, attempt])
        return _Followed([*attempts, attempt], result=result, waited=True)
