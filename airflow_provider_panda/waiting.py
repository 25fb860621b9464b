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


def _stamp(value: Any) -> str | None:
    """A time from the server (datetime or text) as comparable text."""
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@dataclass(frozen=True)
class StaleMark:
    """A status left over from before a command (``failed`` right after a retry), with what the task
    said then: its attempt number, last state change and error dialog. The same status read later
    with any of those changed is a new outcome (the retry ran and ended, or JEDI refused it), so a
    retry that fails again between two polls is still seen; without them (a server without
    ``task/get_detailed_info``) only a different status in between, or the grace, ends the staleness.
    """

    status: str
    attempt: int | None = None
    changed: str | None = None
    dialog: str | None = None

    @classmethod
    def of(cls, status: str, info: dict[str, Any] | None) -> StaleMark:
        if not info:
            return cls(status)
        attempt = info.get("attemptNr")
        return cls(status, attempt if isinstance(attempt, int) else None, _stamp(info.get("stateChangeTime")),
                   info.get("errorDialog"))

    @property
    def checkable(self) -> bool:
        return self.attempt is not None or self.changed is not None

    def superseded_by(self, info: dict[str, Any]) -> bool:
        """Whether the task has moved on since the mark was taken (a new attempt or state change)."""
        attempt = info.get("attemptNr")
        return ((self.attempt is not None and isinstance(attempt, int) and attempt != self.attempt)
                or (self.changed is not None and _stamp(info.get("stateChangeTime")) != self.changed)
                or info.get("errorDialog") != self.dialog)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "attempt": self.attempt, "changed": self.changed, "dialog": self.dialog}

    @classmethod
    def load(cls, value: Any) -> StaleMark | None:
        """From a trigger kwarg or XCom: None, a bare status (older triggers), or :meth:`to_dict`."""
        if value is None or isinstance(value, StaleMark):
            return value
        if isinstance(value, str):
            return cls(value)
        return cls(value["status"], value.get("attempt"), value.get("changed"), value.get("dialog"))


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
    #: A status left over from before a command (see :class:`StaleMark`): it does not end the wait
    #: until the task has left it, shows a new attempt or state change, or the grace has passed.
    stale: StaleMark | None = None
    readings: int = 0
    #: When the current run of "not found" readings began: the start of the wait for a task never
    #: seen, the first such reading for one seen before (the real server answers "not found" on a
    #: database error too, so a seen task gets the whole grace again before the wait gives up).
    missing_since: float | None = None
    seen: bool = False

    def __post_init__(self) -> None:
        self.stale = StaleMark.load(self.stale)

    @property
    def moved(self) -> bool:
        """The last reading was a transition (not the first reading): time to log the progress.
        Not on the first reading, so thousands of waits starting together ask for nothing more."""
        return self.changed and self.previous_status is not None and self.last_status is not None

    def needs_info(self, status: str | None) -> bool:
        """Whether this reading is the stale status and only the task's details can tell whether
        it is old or new: the caller then reads ``task/get_detailed_info`` and passes it on."""
        return self.stale is not None and status == self.stale.status and self.stale.checkable

    def observe(self, status: str | None, info: dict[str, Any] | None = None) -> str | None:
        """Feed the status just read (None: the server does not know the task yet) and, when
        :meth:`needs_info` said so, the task's details; get the verdict. The details are read
        after the status, so their status is the newer one, consistent with their attemptNr."""
        if info is not None and isinstance(info.get("status"), str):
            status = info["status"]
        self.previous_status = self.last_status
        self.changed = status != self.last_status or not self.readings
        self.readings += 1
        if self.changed:
            if status is None and self.seen:
                self.log.warning("PanDA task %s: the server does not find it now (it answers so on a database "
                                 "error too); waiting up to %.0f s for it to come back", self.task_id,
                                 self.not_found_grace)
            elif status is None:
                self.log.info("PanDA task %s is not visible yet (queued in DEFT, or no such task: check the id); "
                              "waiting up to %.0f s", self.task_id, self.not_found_grace)
            else:
                self.log.info("PanDA task %s: %s -> %s", self.task_id, self.last_status or "(start)", status)
        self.last_status = status
        now = time.monotonic()
        overdue = now - self.started > self.not_found_grace
        if status is None:
            if self.missing_since is None:
                self.missing_since = now if self.seen else self.started
            return ERROR if now - self.missing_since > self.not_found_grace else None
        self.seen, self.missing_since = True, None
        if self.stale is not None:
            if status == self.stale.status:
                if info is not None and self.stale.superseded_by(info):
                    self.log.info("PanDA task %s: %s again (attempt %s)", self.task_id, status, info.get("attemptNr"))
                elif not overdue:
                    return None
            self.stale = None
        return self.spec.classify(status)

    def log_progress(self, info: dict[str, Any] | None) -> None:
        """One line of task-level progress (input files done and failed), from ``get_task_info``."""
        line = progress_line(info)
        if line:
            self.log.info("PanDA task %s: %s", self.task_id, line)


def progress_line(info: dict[str, Any] | None) -> str:
    """``"3 of 10 input files finished, 1 failed (30%); attempt 1"`` from a task's details."""
    if not info or not isinstance(info.get("nFiles"), int) or not info["nFiles"]:
        return ""
    text = (f"{info.get('nFilesFinished') or 0} of {info['nFiles']} input files finished, "
            f"{info.get('nFilesFailed') or 0} failed ({info.get('pctFinished') or 0}%)")
    if info.get("attemptNr"):
        text += f"; attempt {info['attemptNr']}"
    return text


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


#: What a user can do about each way a task ends badly (the last line of a failure report).
NEXT_STEP = {
    "failed": "retry it (RetryTaskOperator, or auto_retries on the operator that submitted it), with "
              "new_params if the errors above call for other settings",
    "finished": "some inputs failed: allow_partial=True accepts this; RetryTaskOperator runs the failed "
                "files again, FileRecoveryOperator recovers lost ones",
    "exhausted": "PanDA gave up after its attempts: RetryTaskOperator with new_params (more memory or "
                 "walltime, say) once the errors above are understood",
    "broken": "the task cannot run as defined: fix its parameters and submit it under a new taskName",
    "aborted": "it was killed: submit it again (an Airflow retry re-executes it) if that was not meant",
}


def failure_message(task_id: int, status: str | None, info: dict[str, Any] | None,
                    jobs: list[dict[str, Any] | None] | None, monitor_url: str) -> str:
    """What a failed wait says: the status, the task's own explanation (``errorDialog``), its file
    counts, the commonest errors of a sample of its newest jobs, and the monitor link. ``info`` and
    ``jobs`` are best-effort (None when they could not be read): the failure is reported anyway."""
    lines = [f"PanDA task {task_id} ended {status}."]
    if info and info.get("errorDialog"):
        lines.append(f"  PanDA says: {str(info['errorDialog'])[:1000]}")
    progress = progress_line(info)
    if progress:
        lines.append(f"  {progress}")
    if jobs:
        counts = job_counts(jobs)
        failed = sum(n for s, n in counts.items() if s in api.JOB_FAILED)
        lines.append(f"  {failed} of the {sum(counts.values())} newest jobs failed.")
        for text, count in top_errors(jobs):
            lines.append(f"  {count} x {text}")
    if status in NEXT_STEP:
        lines.append(f"  Next: {NEXT_STEP[status]}")
    lines.append(f"Monitor: {monitor_url}")
    return "\n".join(lines)
