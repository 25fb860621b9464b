"""What a failed wait tells the user, read best-effort from the server (shared by operators and sensor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_panda.exceptions import PandaError, PandaTaskFailedError
from airflow_provider_panda.waiting import attempt_reason, failure_message

if TYPE_CHECKING:
    from airflow_provider_panda.hooks.panda import PandaHook


def _best_effort(read: Any, log: Any, what: str) -> Any:
    try:
        return read()
    except PandaError as exc:  # the report must never replace the failure it reports
        if log is not None:
            log.warning("Could not read %s for the failure report: %s", what, exc)
        return None


def failed_attempt(hook: PandaHook, task_id: int, status: str,
                   log: Any = None) -> tuple[dict[str, Any], Any, list[dict[str, Any] | None]]:
    """One failed attempt, for the log and the final report: ``{"attempt", "status", "reason"}``
    (the task's ``errorDialog`` and the commonest errors of its newest jobs), the task's details and
    that bounded sample of its jobs (what a retry policy's diagnosis reads)."""
    info = _best_effort(lambda: hook.get_task_info(task_id), log, "the task's details")
    jobs = _best_effort(lambda: hook.get_task_jobs(task_id), log, "the task's newest jobs") or []
    attempt = (info or {}).get("attemptNr")
    return {"attempt": attempt if isinstance(attempt, int) else None, "status": status,
            "reason": attempt_reason(info, jobs)}, info, jobs


def task_failed(hook: PandaHook, task_id: int, status: str | None, log: Any = None,
                attempts: Sequence[dict[str, Any]] = ()) -> PandaTaskFailedError:
    """The error a failed wait raises: status, ``errorDialog``, file counts, the commonest errors of
    the newest jobs, every earlier attempt with its reason, and the monitor link; a read that fails
    only leaves its part out."""
    info = _best_effort(lambda: hook.get_task_info(task_id), log, "the task's details")
    jobs = _best_effort(lambda: hook.get_task_jobs(task_id), log, "the task's newest jobs")
    message = failure_message(task_id, status, info, jobs, hook.monitor_url(task_id), attempts)
    return PandaTaskFailedError(message, task_id, status or "unknown")
