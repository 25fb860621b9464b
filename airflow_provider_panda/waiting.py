"""How every wait on a PanDA task decides and reports: one logic for operators (sync and
deferred), the sensor and the trigger. No I/O here; callers fetch statuses and jobs and feed them in.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaError, PandaInputError, PandaNotFoundError

_T = TypeVar("_T")

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

    @classmethod
    def any(cls, exclude: Iterable[str] = ()) -> WaitSpec:
        """Any status the task can have (but ``exclude``) ends the wait: a wait for a task to appear."""
        return cls(tuple(s for s in api.TASK_STATUSES if s not in set(exclude)))

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
    """A status left over from before a command (``failed`` right after a retry, ``finished`` right
    after a file recovery request), with what the task said then: its attempt number, last state
    change and error dialog. The same status read later with any of those changed is a new outcome
    (the retry ran and ended, or JEDI refused it), so a retry that fails again between two polls is
    still seen; without them (a server without ``task/get_detailed_info``) only a different status
    in between, or the grace, ends the staleness. ``command`` and ``sent_at`` (epoch seconds) say
    which command made it stale and when: the grace counts from then, in whichever process waits.
    """

    status: str
    attempt: int | None = None
    changed: str | None = None
    dialog: str | None = None
    command: str | None = None
    sent_at: float | None = None

    @classmethod
    def of(cls, status: str, info: dict[str, Any] | None, command: str | None = None) -> StaleMark:
        sent_at = time.time()
        if not info:
            return cls(status, command=command, sent_at=sent_at)
        attempt = info.get("attemptNr")
        return cls(status, attempt if isinstance(attempt, int) else None, _stamp(info.get("stateChangeTime")),
                   info.get("errorDialog"), command, sent_at)

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
        return {"status": self.status, "attempt": self.attempt, "changed": self.changed, "dialog": self.dialog,
                "command": self.command, "sent_at": self.sent_at}

    @classmethod
    def load(cls, value: Any) -> StaleMark | None:
        """From a trigger kwarg or XCom: None, a bare status, or :meth:`to_dict`."""
        if value is None or isinstance(value, StaleMark):
            return value
        if isinstance(value, str):
            return cls(value)
        sent_at = value.get("sent_at")
        return cls(value["status"], value.get("attempt"), value.get("changed"), value.get("dialog"),
                   value.get("command"), float(sent_at) if isinstance(sent_at, (int, float)) else None)

    @staticmethod
    def newest(*marks: StaleMark | None) -> StaleMark | None:
        """The mark of the latest command (a mark without a time counts as the oldest)."""
        present = [m for m in marks if m is not None]
        return max(present, key=lambda m: m.sent_at or 0.0) if present else None


#: What a wait step asks its driver to read: the task's status, its details (to tell a stale
#: status from a new one, or an unrefined task from a refined one), or its details for a progress
#: line (best-effort: a failed read only leaves the line out).
STATUS, DETAILS, PROGRESS = "status", "details", "progress"


@dataclass
class TaskWatch:
    """One wait on one task: remembers the last status, logs changes, enforces the not-found grace.

    :meth:`step` is the one rule every wait follows (the operators' sync wait and their visibility
    and settle waits, the sensor in every mode, the trigger): read the status, read the details
    when only they can tell, decide. It does no I/O; :func:`take_reading` and
    :func:`take_reading_async` answer its reads.
    """

    task_id: int
    spec: WaitSpec
    log: Any
    started: float = field(default_factory=time.monotonic)
    last_status: str | None = None
    previous_status: str | None = None
    changed: bool = False
    not_found_grace: float = NOT_FOUND_GRACE
    #: A status left over from before a command (see :class:`StaleMark`): it does not end the wait
    #: until the task has left it, shows a new attempt or state change, or the grace has passed
    #: since the command was sent.
    stale: StaleMark | None = None
    #: A task JEDI has not refined yet (``registered``, owner ``tobeset``) counts as not visible:
    #: the server refuses its owner's commands until then. Used by the command operators.
    until_refined: bool = False
    #: Log a progress line (input files done, failed) on each status change.
    progress: bool = True
    readings: int = 0
    #: When the current run of "not found" readings began: the start of the wait for a task never
    #: seen, the first such reading for one seen before (the real server answers "not found" on a
    #: database error too, so a seen task gets the whole grace again before the wait gives up).
    missing_since: float | None = None
    seen: bool = False
    #: The task's details read by the last step, if it read them.
    info: dict[str, Any] | None = None
    #: The last transient read error of :func:`wait_until` (None once a read went through).
    error: PandaError | None = None
    #: A command's mark was superseded: a status that would end the wait is still confirmed by the
    #: details (a cached status, e.g. the shared poller's, may be from before the command).
    confirm: bool = False

    def __post_init__(self) -> None:
        self.stale = StaleMark.load(self.stale)

    @property
    def moved(self) -> bool:
        """The last reading was a transition (not the first reading): time to log the progress.
        Not on the first reading, so thousands of waits starting together ask for nothing more."""
        return self.changed and self.previous_status is not None and self.last_status is not None

    def needs_info(self, status: str | None) -> bool:
        """Whether only the task's details can tell what this status means: a status that would end
        the wait while a command's mark is on (from before the command, or its outcome?) or, before
        a command, ``registered`` (refined yet?)."""
        if self.until_refined and status == api.TASK_UNREFINED:
            return True
        return ((self.confirm or (self.stale is not None and self.stale.checkable))
                and self.spec.classify(status) is not None)

    def step(self) -> Generator[str, Any, str | None]:
        """One reading: yields what to read (:data:`STATUS`, :data:`DETAILS`, :data:`PROGRESS`) and
        is sent the answer (None: the server does not know the task); returns the verdict."""
        status = yield STATUS
        info = (yield DETAILS) if status is not None and self.needs_info(status) else None
        if status is not None and info is None and self.needs_info(status):
            status = None  # the details are missing too: a reading of "not found"
        self.info = info
        verdict = self.observe(status, info)
        if self.moved and self.progress:
            self.log_progress(info or (yield PROGRESS))
        return verdict

    def _overdue(self, now: float) -> bool:
        """The grace is over: counted from the command when the mark says when it was sent."""
        if self.stale is not None and self.stale.sent_at is not None:
            return time.time() - self.stale.sent_at > self.not_found_grace
        return now - self.started > self.not_found_grace

    def observe(self, status: str | None, info: dict[str, Any] | None = None) -> str | None:
        """Feed the status just read (None: the server does not know the task yet) and, when
        :meth:`needs_info` said so, the task's details; get the verdict. The details are read
        after the status, so their status is the newer one, consistent with their attemptNr."""
        if info is not None and isinstance(info.get("status"), str):
            status = info["status"]
        unrefined = (self.until_refined and status == api.TASK_UNREFINED and info is not None
                     and info.get("userName") == api.UNREFINED_OWNER)
        self.previous_status = self.last_status
        self.changed = status != self.last_status or not self.readings
        self.readings += 1
        now = time.monotonic()
        if self.changed:
            if status is None and self.seen:
                self.log.warning("PanDA task %s: the server does not find it now (it answers so on a database "
                                 "error too); waiting up to %.0f s for it to come back", self.task_id,
                                 self.not_found_grace)
            elif status is None:
                self.log.info("PanDA task %s is not visible yet (queued in DEFT, or no such task: check the id); "
                              "waiting up to %.0f s", self.task_id, self.not_found_grace)
            elif unrefined:
                self.log.info("PanDA task %s is %s: JEDI has not refined it yet, and until then the server refuses "
                              "its owner's commands; waiting up to %.0f s", self.task_id, status,
                              self.not_found_grace)
            else:
                self.log.info("PanDA task %s: %s -> %s", self.task_id, self.last_status or "(start)", status)
        self.last_status = status
        if status is None:
            if self.missing_since is None:
                self.missing_since = now if self.seen else self.started
            return ERROR if now - self.missing_since > self.not_found_grace else None
        self.seen, self.missing_since = True, None
        if unrefined:  # after the grace the command is sent anyway (a production role may) and its answer stands
            return SUCCESS if now - self.started > self.not_found_grace else None
        if self.stale is not None and self._still_stale(status, info, now):
            return None
        return self.spec.classify(status)

    def _still_stale(self, status: str, info: dict[str, Any] | None, now: float) -> bool:
        """Whether this reading is from before the command. With the task's details: any status that
        would end the wait while its attempt, last state change and error dialog are the mark's
        (after a recovery request JEDI turns ``done`` into ``finished`` by a bare UPDATE first);
        without them, the marked status until another one is seen. The grace ends it either way."""
        stale = self.stale
        assert stale is not None
        if info is not None and stale.superseded_by(info):
            if status == stale.status:
                self.log.info("PanDA task %s: %s again (attempt %s)", self.task_id, status, info.get("attemptNr"))
            self.stale, self.confirm = None, stale.checkable
            return False
        if info is None and status != stale.status:
            # no details to compare: another status is the sign the command was taken
            self.stale, self.confirm = None, stale.checkable
            return False
        if self.spec.classify(status) is None:
            return False  # it does not end the wait anyway; keep the mark for the statuses that would
        if not self._overdue(now):
            return True
        self.log.warning("PanDA task %s is still %s %.0f s after the %s, as before it: taking that as the "
                         "outcome", self.task_id, status, self.not_found_grace, stale.command or "command")
        self.stale = None
        return False

    def log_progress(self, info: dict[str, Any] | None) -> None:
        """One line of task-level progress (input files done and failed), from ``get_task_info``."""
        line = progress_line(info)
        if line:
            self.log.info("PanDA task %s: %s", self.task_id, line)


class TaskSource:
    """A task's status and details read through a sync hook (or anything with its two reads)."""

    def __init__(self, client: Any, task_id: int) -> None:
        self.client, self.task_id = client, task_id

    def read(self) -> str | None:
        try:
            return self.client.get_task_status(self.task_id)
        except PandaNotFoundError:
            return None


def _failed_details(request: str, exc: PandaError) -> None:
    """A details read that failed: "not found" is an answer (None); so is any failure of a progress
    read (it only leaves the progress line out); any other failure is the step's."""
    if isinstance(exc, PandaNotFoundError) or request == PROGRESS:
        return None
    raise exc


def take_reading(watch: TaskWatch, source: Any) -> str | None:
    """One :meth:`TaskWatch.step` on a sync source (``read()`` for the status, ``client`` for the
    details); a transient or definite error of the status read propagates to the caller."""
    step, answer = watch.step(), None
    while True:
        try:
            request = step.send(answer)
        except StopIteration as done:
            return done.value
        try:
            answer = source.read() if request == STATUS else source.client.get_task_info(watch.task_id)
        except PandaError as exc:
            if request == STATUS:
                raise
            answer = _failed_details(request, exc)


async def within(step: Awaitable[_T], limit: float | None) -> _T | None:
    """``step``'s result, or None after ``limit`` seconds (None: no limit; the step is then cancelled).

    Not ``asyncio.wait_for``: before Python 3.12 it returns the step's result when a cancellation of
    the caller lands as the step completes, so a user's action on a deferred task (mark, clear) is
    swallowed: the trigger waits on and Airflow never calls its ``on_kill``. Here the caller's
    cancellation always propagates, message and all (the triggerer reads it), on every Python."""
    if limit is None:
        return await step
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    except BaseException:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    return None


async def take_reading_async(watch: TaskWatch, source: Any) -> str | None:
    """:func:`take_reading` for an async source (the trigger's own reads or the shared poller)."""
    step, answer = watch.step(), None
    while True:
        try:
            request = step.send(answer)
        except StopIteration as done:
            return done.value
        try:
            answer = await (source.read() if request == STATUS else source.client.get_task_info(watch.task_id))
        except PandaError as exc:
            if request == STATUS:
                raise
            answer = _failed_details(request, exc)


def wait_until(watch: TaskWatch, source: Any, poll_interval: float, end_time: float | None = None,
               sleep: Any = time.sleep) -> str:
    """The sync wait loop: one :func:`take_reading` per ``poll_interval`` until a verdict, or
    :data:`TIMEOUT` once ``end_time`` (epoch seconds) has passed. Transient faults (no answer,
    5xx, 429, a page that is not PanDA's) only mean "not yet"; a definite error propagates. The
    last transient error is kept on ``watch.error`` for a caller that must report it."""
    from airflow_provider_panda.transport import is_transient

    while True:
        verdict = None
        try:
            verdict = take_reading(watch, source)
            watch.error = None
        except PandaError as exc:
            if not is_transient(exc):
                raise
            watch.error = exc
            watch.log.warning("PanDA task %s: status read failed (%s); still waiting", watch.task_id, exc)
        if verdict is None and end_time is not None and time.time() >= end_time:
            verdict = TIMEOUT
        if verdict is not None:
            return verdict
        sleep(poll_interval)


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


def attempt_reason(info: dict[str, Any] | None, jobs: list[dict[str, Any] | None] | None) -> str:
    """Why an attempt failed, in one line: PanDA's ``errorDialog`` and the commonest job errors."""
    parts = []
    if info and info.get("errorDialog"):
        parts.append(f"PanDA says: {str(info['errorDialog'])[:300]}")
    if jobs:
        counts = job_counts(jobs)
        failed = sum(n for s, n in counts.items() if s in api.JOB_FAILED)
        errors = "; ".join(f"{count} x {text[:200]}" for text, count in top_errors(jobs, 2))
        parts.append(f"{failed} of the {sum(counts.values())} newest jobs failed" + (f": {errors}" if errors else ""))
    return "; ".join(parts) or "PanDA gave no reason (no errorDialog, no failed job read)"


def attempt_line(attempt: dict[str, Any]) -> str:
    """``attempt 1 ended failed: <reason>`` for a log line or the final report."""
    number = attempt.get("attempt")
    return f"attempt {'?' if number is None else number} ended {attempt.get('status')}: {attempt.get('reason')}"


def failure_message(task_id: int, status: str | None, info: dict[str, Any] | None,
                    jobs: list[dict[str, Any] | None] | None, monitor_url: str,
                    attempts: Iterable[dict[str, Any]] = ()) -> str:
    """What a failed wait says: the status, the task's own explanation (``errorDialog``), its file
    counts, the commonest errors of a sample of its newest jobs, the earlier attempts (each with its
    reason and the parameters it was retried with), and the monitor link. ``info`` and ``jobs`` are
    best-effort (None when they could not be read): the failure is reported anyway."""
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
    attempts = list(attempts)
    if attempts:
        lines.append(f"  Earlier attempts ({len(attempts)}):")
        for attempt in attempts:
            retried = attempt.get("retried_with")
            then = ("; its lost files recovered" if attempt.get("action") == "recover" else
                    f"; retried with {retried}" if retried else "; retried")
            lines.append(f"    {attempt_line(attempt)}{then}")
    if status in NEXT_STEP:
        lines.append(f"  Next: {NEXT_STEP[status]}")
    lines.append(f"Monitor: {monitor_url}")
    return "\n".join(lines)
