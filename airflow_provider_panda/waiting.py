"""How every wait on a PanDA task decides and reports: one logic for operators (sync and
deferred), the sensor and the trigger. No I/O here; callers fetch statuses and jobs and feed them in.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaInputError

SUCCESS, FAILURE, TIMEOUT, ERROR = "success", "failure", "timeout", "error"
#: How long a freshly submitted task may stay invisible (only DEFT knows it) before the wait fails.
NOT_FOUND_GRACE = 600.0
ERROR_FIELDS = (
    ("pilotErrorCode", "pilotErrorDiag"), ("exeErrorCode", "exeErrorDiag"), ("ddmErrorCode", "ddmErrorDiag"),
    ("supErrorCode", "supErrorDiag"), ("taskBufferErrorCode", "taskBufferErrorDiag"),
    ("brokerageErrorCode", "brokerageErrorDiag"), ("jobDispatcherErrorCode", "jobDispatcherErrorDiag"),
)


def _statuses(values: Any, what: str) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    try:
        statuses = tuple(values)
    except TypeError:
        raise PandaInputError(f"{what} must be a list of task statuses, got {values!r:.60}") from None
    unknown = [s for s in statuses if s not in api.TASK_STATUSES]
    if unknown:
        raise PandaInputError(f"{what}: unknown PanDA task status {unknown}; known: {', '.join(api.TASK_STATUSES)}")
    return statuses


@dataclass(frozen=True)
class WaitSpec:
    """Which statuses end a wait well, which end it badly; any other stop status ends it badly too."""

    success: tuple[str, ...] = api.TASK_DEFAULT_SUCCESS
    failure: tuple[str, ...] = ()

    @classmethod
    def build(cls, success_statuses: Iterable[str] = api.TASK_DEFAULT_SUCCESS,
              failure_statuses: Iterable[str] | None = None, allow_partial: bool = False) -> WaitSpec:
        success = _statuses(success_statuses, "success statuses")
        if not success:
            raise PandaInputError("success statuses must not be empty")
        if allow_partial and "finished" not in success:
            success += ("finished",)
        if failure_statuses is None:
            failure = tuple(s for s in api.TASK_DEFAULT_FAILURE if s not in success)
        else:
            failure = _statuses(failure_statuses, "failure statuses")
        both = set(success) & set(failure)
        if both:
            raise PandaInputError(f"statuses {sorted(both)} are both success and failure statuses")
        return cls(success, failure)

    def classify(self, status: str | None) -> str | None:
        """``success``, ``failure`` or None (keep waiting)."""
        if status in self.success:
            return SUCCESS
        if status in self.failure or status in api.TASK_STOPPED:
            return FAILURE
        return None


@dataclass
class TaskWatch:
    """One wait on one task: remembers the last status, logs changes, enforces the not-found grace."""

    task_id: int
    spec: WaitSpec
    log: Any
    started: float = field(default_factory=time.monotonic)
    last_status: str | None = None
    previous_status: str | None = None
    changed: bool = False
    not_found_grace: float = NOT_FOUND_GRACE
    #: A status left over from before a command (e.g. ``failed`` right after a retry): it does not
    #: end the wait until the task has left it once, or the grace has passed.
    stale_status: str | None = None

    @property
    def moved(self) -> bool:
        """The last reading was a transition (not the first reading): time to log the job counts.
        Not on the first reading, so thousands of waits starting together ask for no job lists."""
        return self.changed and self.previous_status is not None and self.last_status is not None

    def observe(self, status: str | None) -> str | None:
        """Feed the status just read (None: the server does not know the task yet); get the verdict."""
        self.previous_status = self.last_status
        self.changed = status != self.last_status
        if self.changed:
            if status is None:
                self.log.info("PanDA task %s is not visible yet (queued in DEFT)", self.task_id)
            else:
                self.log.info("PanDA task %s: %s -> %s", self.task_id, self.last_status or "(start)", status)
        self.last_status = status
        overdue = time.monotonic() - self.started > self.not_found_grace
        if status is None:
            return ERROR if overdue else None
        if self.stale_status is not None:
            if status == self.stale_status and not overdue:
                return None
            self.stale_status = None
        return self.spec.classify(status)

    def log_jobs(self, jobs: list[dict[str, Any] | None]) -> None:
        counts = job_counts(jobs)
        if counts:
            self.log.info("PanDA task %s jobs: %s", self.task_id,
                          ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


def job_counts(jobs: Iterable[dict[str, Any] | None]) -> dict[str, int]:
    return dict(Counter(j.get("jobStatus", "unknown") for j in jobs if j))


def top_errors(jobs: Iterable[dict[str, Any] | None], limit: int = 3) -> list[tuple[str, int]]:
    """The most common error diagnostics of failed jobs, as ('code N: diag', count)."""
    errors: Counter[str] = Counter()
    for job in jobs:
        if not job or job.get("jobStatus") not in api.JOB_FAILED:
            continue
        for code_key, diag_key in ERROR_FIELDS:
            code = job.get(code_key)
            if code:
                errors[f"{code_key} {code}: {job.get(diag_key) or ''}".strip()] += 1
                break
        else:
            errors[f"job {job.get('jobStatus')}"] += 1
    return errors.most_common(limit)


def failure_message(task_id: int, status: str | None, jobs: list[dict[str, Any] | None], monitor_url: str) -> str:
    """What a failed wait says: the status, the failed job count, the commonest errors, the monitor link."""
    counts = job_counts(jobs)
    failed = sum(n for s, n in counts.items() if s in api.JOB_FAILED)
    lines = [f"PanDA task {task_id} ended {status}: {failed} of {sum(counts.values())} jobs failed."]
    for text, count in top_errors(jobs):
        lines.append(f"  {count} x {text}")
    lines.append(f"Monitor: {monitor_url}")
    return "\n".join(lines)
