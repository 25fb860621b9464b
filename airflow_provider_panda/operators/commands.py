"""The commands on a PanDA task the operator did not submit: retry, kill, finish, recover lost files.

Each waits for the task's visibility (JEDI refuses commands on a task it has not refined), sends
the command, leaves its mark for the waits downstream (marks.py) and, with
``wait_for_completion``, waits past the status the task had before the command. None of them
owns the task: killing the Airflow task stops the wait, never the PanDA task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_panda import api, arguments
from airflow_provider_panda.calls import as_task_id
from airflow_provider_panda.exceptions import PandaCommandRejected, PandaInputError
from airflow_provider_panda.operators.base import PandaWaitingOperator
from airflow_provider_panda.waiting import SUCCESS, WaitSpec

if TYPE_CHECKING:
    from airflow.sdk import Context


class RetryTaskOperator(PandaWaitingOperator):
    """Retry a PanDA task's failed work (optionally with new parameters), and optionally wait.

    Returns the jediTaskID. A task that is already ``done`` has nothing to retry: that is success.

    :param new_params: parameters PanDA applies to the retried jobs (e.g. ``{"ramCount": 4000}``).
    :param auto_retry_policy: read why the task failed first and let the policy decide, as
        ``SubmitTaskOperator`` does (e.g. ``DefaultRetryPolicy()``): its parameters (``new_params``
        win over them), a file recovery instead, or no retry at all (the operator fails with the reason).
    """

    publishes_outputs = True
    template_fields: Sequence[str] = ("jedi_task_id", "new_params")
    template_fields_renderers = {"new_params": "json"}

    def __init__(self, *, jedi_task_id: int | str, new_params: dict[str, Any] | None = None,
                 auto_retry_policy: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from airflow_provider_panda.retry_policy import policy_for

        self.jedi_task_id = jedi_task_id
        self.new_params = new_params
        self.auto_retry_policy = policy_for(auto_retry_policy)

    def execute(self, context: Context) -> Any:
        task_id = as_task_id(self.jedi_task_id)
        self._remember(context, task_id)
        status = self._await_visible(task_id)
        new_params = self.new_params
        if self.auto_retry_policy is not None and self.spec.classify(status) != SUCCESS:
            decided = self._decide(task_id, status)
            if decided is None:
                return self._recover(context, task_id, status)
            new_params = {**decided, **(new_params or {})}
        stale = self._mark(task_id, status, "retry")
        try:
            self.log.info("PanDA: %s", self.hook.retry_task(task_id, new_params or None))
        except PandaCommandRejected:
            if self.spec.classify(status) != SUCCESS:
                raise
            self.log.info("PanDA task %s is already %s: nothing to retry", task_id, status)
            return self._conclude(context, task_id, SUCCESS, status)
        self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self._end_time(), stale=stale)

    def _decide(self, task_id: int, status: str) -> dict[str, Any] | None:
        """The policy's decision on the failed task: the parameters of the retry, None for a file
        recovery instead; a stop fails the operator with the policy's reason."""
        from airflow_provider_panda import retry_policy as policies
        from airflow_provider_panda.diagnosis import diagnose
        from airflow_provider_panda.exceptions import PandaTaskFailedError
        from airflow_provider_panda.operators.base import fail_without_retry
        from airflow_provider_panda.reports import failed_attempt

        _, info, jobs = failed_attempt(self.hook, task_id, status, self.log)
        decision = self.auto_retry_policy(diagnose(info, jobs, status=status), 0)
        self.log.warning("PanDA task %s (%s): %s", task_id, status, decision.reason)
        if decision.action == policies.RECOVER:
            return None
        if decision.action != policies.RETRY:
            error = PandaTaskFailedError(f"PanDA task {task_id} not retried: {decision.reason}. "
                                         f"Monitor: {self.hook.monitor_url(task_id)}", task_id, status)
            raise fail_without_retry(str(error), error) if decision.final else error
        return dict(decision.new_params)

    def _recover(self, context: Context, task_id: int, status: str) -> Any:
        stale = self._mark(task_id, status, "file recovery")
        self.log.info("PanDA: %s", self.hook.send_file_recovery_request(task_id))
        self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self._end_time(), stale=stale)


class _EndTaskOperator(PandaWaitingOperator):
    """Send kill or finish; a task already ended or ending counts as done. Returns the jediTaskID.

    The wait (``wait_for_completion``) lasts until the task reaches a final status (any, unless
    ``success_statuses`` names some).
    """

    template_fields: Sequence[str] = ("jedi_task_id",)
    command = ""

    def __init__(self, *, jedi_task_id: int | str, wait_for_termination: bool | None = None, **kwargs: Any) -> None:
        if wait_for_termination is not None:  # the old name, a real parameter so that partial() takes it too
            arguments.renamed(type(self).__name__, "wait_for_termination", "wait_for_completion")
            if "wait_for_completion" in kwargs:
                raise PandaInputError("give wait_for_completion (its old name: wait_for_termination), not both")
            kwargs["wait_for_completion"] = wait_for_termination
        if kwargs.get("allow_partial"):
            arguments.no_effect(type(self).__name__, "allow_partial=True", "the wait ends on any final status")
        super().__init__(**kwargs)
        self.jedi_task_id = jedi_task_id

    @classmethod
    def default_spec(cls) -> WaitSpec:
        return WaitSpec(success=tuple(sorted(api.TASK_FINAL)))

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
            if exc.code != api.CommandCode.BAD_STATUS or status not in api.COMMAND_REFUSED_IN[self.command]:
                raise
            self.log.info("PanDA task %s is already %s: nothing to %s", task_id, status, self.command)
            return task_id
        self._sent(context, task_id, stale)
        if not self.wait_for_completion:
            return task_id
        return self._wait(context, task_id, self._end_time(), stale=stale)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, **carried: Any) -> Any:
        if verdict == SUCCESS:
            self.log.info("PanDA task %s ended %s", task_id, status)
            return task_id
        return super()._conclude(context, task_id, verdict, status, end_time=end_time, **carried)


class KillTaskOperator(_EndTaskOperator):
    """Kill a PanDA task; killing a task that already ended (or is being aborted) succeeds."""

    command = "kill"

    def _send(self, task_id: int) -> str:
        return self.hook.kill_task(task_id)


class FinishTaskOperator(_EndTaskOperator):
    """Finish a PanDA task now (``soft``: let running jobs complete); an ended task succeeds."""

    command = "finish"

    def __init__(self, *, soft: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.soft = soft

    def _send(self, task_id: int) -> str:
        return self.hook.finish_task(task_id, soft=self.soft)


class FileRecoveryOperator(PandaWaitingOperator):
    """Ask PanDA to recover a task's lost files, and optionally wait for the recovered task.

    Returns the URL of the recovery log. PanDA handles the request later (the task's status changes
    only when the recovery runs), so the wait, and every PanDA wait downstream, looks past the
    status the task had when the request was sent.

    :param dry_run: only report what would be recovered (nothing to wait for).

    With ``wait_for_completion`` it waits as :class:`SubmitTaskOperator` does (``success_statuses``,
    ``failure_statuses``, ``allow_partial``, ``timeout``, ``deferrable``) and pushes the outputs.
    """

    publishes_outputs = True
    template_fields: Sequence[str] = ("jedi_task_id",)

    def __init__(self, *, jedi_task_id: int | str, dry_run: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if dry_run and self.wait_for_completion:
            raise PandaInputError("FileRecoveryOperator: a dry run recovers nothing, so there is nothing to wait "
                                  "for; drop wait_for_completion or dry_run")
        self.jedi_task_id = jedi_task_id
        self.dry_run = dry_run

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
        return self._wait(context, task_id, self._end_time(), stale=stale, recovery_log=url)

    def _conclude(self, context: Context, task_id: int, verdict: str, status: str | None,
                  end_time: float | None = None, recovery_log: str | None = None, **carried: Any) -> Any:
        super()._conclude(context, task_id, verdict, status, end_time=end_time, **carried)
        return recovery_log
