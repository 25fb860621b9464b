"""The task life of the local PanDA server: tasks and jobs that move on a clock the caller controls.

This is PanDA's behaviour (DEFT, JEDI, the pilots) reduced to what a client can observe: codes,
messages, which status allows which command, duplicate detection, job statuses and errors.
It has no HTTP in it; :mod:`airflow_provider_panda.testing.server` puts it behind the real API.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import re
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_panda import api
from airflow_provider_panda.api import CommandCode, SubmitCode
from airflow_provider_panda.testing import messages

OUTCOMES = ("done", "finished", "failed", "broken", "exhausted", "hang")
#: Outcomes JEDI reaches through 'prepared' (post-processing of finished jobs).
POST_PROCESSED = ("done", "finished", "failed")
#: The statuses a fresh attempt walks through before its outcome, one clock step each.
ATTEMPT_PATH = ("registered", "defined", "ready", "running")
#: Marks a path step that starts a new attempt (attemptNr + 1) as it is taken.
NEW_ATTEMPT = "+"
BROKEN_DIALOG = "task is broken: the job parameters cannot be resolved (simulated by the local server)"
#: getJediTasksInTimeRange never looks further back than this (TaskBuffer moves an older ``since``).
MODIFIED_SINCE_MAX_RANGE = timedelta(days=30)
#: The status of a block's jobs, from their task's status (anything else: activated).
BLOCK_JOB_STATUS = {"running": "running", "done": "finished", "finished": "finished", "prepared": "finished",
                    "failed": "failed", "exhausted": "failed", "broken": "cancelled", "aborted": "cancelled"}
#: Job statuses a job never leaves (the client only needs the failed ones, ``api.JOB_FAILED``).
JOB_FINAL = api.JOB_FAILED | {"finished"}
#: Submission codes the server answers with ``success: true`` (the client reads the code, not this).
SUBMIT_SUCCESS_CODES = frozenset({SubmitCode.NEW, SubmitCode.INCREMENTAL})
#: Task statuses of a running analysis task in which retry acts on its failed jobs.
RETRY_ACTIVE_FROM = frozenset({"running", "scouting", "pending"})
FAILED_JOB_ERROR = {
    "transExitCode": 1,
    "pilotErrorCode": 1305,
    "pilotErrorDiag": "Failed to execute payload:/bin/bash: line 1: 1 Exit 1",
    "exeErrorCode": 1,
    "exeErrorDiag": "payload exited with code 1",
}


def check_outcomes(outcomes: Any) -> list[str]:
    """Outcomes per attempt: a non-empty list drawn from :data:`OUTCOMES`."""
    outcomes = list(outcomes) if isinstance(outcomes, (list, tuple)) else []
    if not outcomes or any(o not in OUTCOMES for o in outcomes):
        raise ValueError(f"outcomes must be a non-empty list of {OUTCOMES}")
    return outcomes


def command_allowed(command: str, status: str) -> bool:
    """Whether the server accepts ``command`` for a task in ``status`` (ignoring roles)."""
    if command in api.COMMAND_REFUSED_IN:
        return status not in api.COMMAND_REFUSED_IN[command]
    if command in api.COMMAND_ALLOWED_FROM:
        return status in api.COMMAND_ALLOWED_FROM[command]
    return True


def _matches(value: Any, pattern: Any) -> bool:
    """A filter value as panda-server applies it: SQL equality, or ``re.search`` for regex-looking ones."""
    if isinstance(pattern, str) and any(c in api.FILTER_REGEX_CHARACTERS for c in pattern):
        return re.search(pattern, str(value)) is not None
    return value == pattern


class Clock:
    """Simulated time: real time plus an offset the caller may advance, or frozen."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen_at: float | None = None

    def now(self) -> float:
        return self._frozen_at if self._frozen_at is not None else time.monotonic() + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def advance(self, seconds: float) -> None:
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds

    def freeze(self, frozen: bool) -> None:
        if frozen and self._frozen_at is None:
            self._frozen_at = self.now()
        elif not frozen and self._frozen_at is not None:
            self._offset = self._frozen_at - time.monotonic()
            self._frozen_at = None

    def wall(self) -> datetime:
        """UTC wall time (naive, as PanDA's database keeps it) matching :meth:`now`."""
        delta = self.now() - time.monotonic()
        return (datetime.now(timezone.utc) + timedelta(seconds=delta)).replace(tzinfo=None, microsecond=0)


@dataclass
class User:
    """An identity the server knows: DN-like name, groups, and the production role if any."""

    name: str
    preferred_username: str
    groups: list[str]

    @property
    def dn(self) -> str:
        return " ".join(t[:1].upper() + t[1:].lower() for t in self.name.split())


@dataclass
class Job:
    panda_id: int
    task_id: int
    status: str
    attempt: int
    site: str
    created: datetime
    modified: datetime
    error: dict[str, Any] = field(default_factory=dict)

    def describe(self, task: Task) -> dict[str, Any]:
        """The job as ``job/get_description`` sends it (JobSpec.to_dict_advanced, trimmed)."""
        started = self.created if self.status not in ("defined", "activated") else None
        ended = self.modified if self.status in JOB_FINAL else None
        info: dict[str, Any] = {
            "PandaID": self.panda_id, "jobDefinitionID": self.task_id, "jediTaskID": self.task_id,
            "jobName": f"{task.name}$", "jobStatus": self.status, "prodSourceLabel": task.label,
            "computingSite": self.site, "cloud": "WORLD", "attemptNr": self.attempt,
            "maxAttempt": task.params.get("maxAttempt", 3), "prodUserName": task.owner,
            "transformation": task.params.get("transPath"), "creationTime": self.created,
            "modificationTime": self.modified, "startTime": started, "endTime": ended,
            "currentPriority": 1000, "coreCount": task.params.get("coreCount", 1), "nEvents": 0,
            "transExitCode": 0, "pilotErrorCode": 0, "pilotErrorDiag": None, "exeErrorCode": 0,
            "exeErrorDiag": None, "ddmErrorCode": 0, "ddmErrorDiag": None, "supErrorCode": 0,
            "supErrorDiag": None, "taskBufferErrorCode": 0, "taskBufferErrorDiag": None,
            "brokerageErrorCode": 0, "brokerageErrorDiag": None, "jobDispatcherErrorCode": 0,
            "jobDispatcherErrorDiag": None, "Files": [],
            "minRamCount": task.params.get("ramCount"), "maxWalltime": task.params.get("walltime"),
        }
        info.update(self.error)
        return info


@dataclass
class Task:
    task_id: int
    name: str
    params: dict[str, Any]
    owner: str
    vo: str
    label: str
    status: str
    outcomes: list[str]
    created: datetime
    modified: datetime
    attempt: int = 0
    job_ids: list[int] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    due: float = 0.0
    recoveries: int = 0
    #: When the status last changed (JEDI's ``stateChangeTime``; never back-dated, unlike ``modified``).
    state_changed: datetime | None = None
    error_dialog: str | None = None
    parent: int | None = None
    #: How many times clients read it (status reads, listings): lets tests wait for a waiter's polls.
    reads: int = 0
    #: A command is being carried out: statuses are written back-dated (see ``PandaSim.backdate_commands``).
    after_command: bool = False
    #: Jobs kept as one block (tasks of 100,000 jobs): their ids, statuses derived from the task's.
    block: range = range(0)

    @property
    def all_job_ids(self) -> list[int]:
        return [*self.block, *self.job_ids]

    @property
    def outcome(self) -> str:
        return self.outcomes[min(self.attempt, len(self.outcomes) - 1)]

    @property
    def n_jobs(self) -> int:
        p = self.params
        for total, per in (("nEvents", "nEventsPerJob"), ("nFiles", "nFilesPerJob")):
            if isinstance(p.get(total), int) and isinstance(p.get(per), int) and p[per] > 0:
                return max(1, min(100, -(-p[total] // p[per])))
        return 1


class PandaSim:
    """All tasks and jobs of one local server; every public method is thread-safe."""

    def __init__(self, step: float = 0.5, rules: list[tuple[str, list[str]]] | None = None,
                 first_task_id: int = 1000, first_job_id: int = 5_000_000) -> None:
        self.clock = Clock()
        self.step = step
        self.rules: list[tuple[re.Pattern[str], list[str]]] = []
        #: What failed jobs report, per task-name pattern and attempt (default: FAILED_JOB_ERROR).
        self.job_errors: list[tuple[re.Pattern[str], list[dict[str, Any]]]] = []
        self.set_rules(rules or [])
        self.lock = threading.RLock()
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self.files: dict[str, tuple[str, int, int]] = {}  # name -> (owner, size, crc)
        self.recovery_requests: list[dict[str, Any]] = []
        #: Control: commands ("kill", "finish", "retry", "recover") that freeze the clock as they are
        #: accepted, so JEDI "has not acted yet" until a test lets the clock go (``clock.freeze(False)``).
        self.hold_after: set[str] = set()
        #: Control: seconds by which the statuses a command leads to (until the task ends again) are
        #: written back-dated in ``modificationTime``, as JEDI's TaskCommando (``setOldModTime``: 1 h)
        #: and ``updateTaskModTimeJEDI`` (1 day) do, so the tasks-modified-since feed does not list
        #: them (a sweep does). None: written at the current time.
        self.backdate_commands: float | None = None
        self._task_ids = itertools.count(first_task_id)
        self._job_ids = itertools.count(first_job_id)
        self._heap: list[tuple[float, int]] = []
        #: Task id -> how many more reads it stays invisible for (a task JEDI has not seen yet).
        self.hidden: dict[int, int] = {}
        #: Task id -> (reads left, refined): it reads ``registered`` meanwhile (see :meth:`registered`).
        self.held: dict[int, tuple[int, bool]] = {}
        #: Task id -> (reads left, status): the status is set on that read (see :meth:`after_reads`).
        self.scripted: dict[int, tuple[int, str]] = {}
        self._blocks: list[tuple[int, int]] = []  # (first job id, task id), in increasing order

    # --- configuration ------------------------------------------------------------------------

    def set_rules(self, rules: list[tuple[str, list[str]]]) -> None:
        """Outcomes per attempt for task names matching a pattern (first match wins; last repeats)."""
        self.rules = [(re.compile(pattern), check_outcomes(outcomes)) for pattern, outcomes in rules]

    def add_rule(self, pattern: str, outcomes: list[str]) -> None:
        """Put one rule in front of the others."""
        with self.lock:
            self.rules.insert(0, (re.compile(pattern), check_outcomes(outcomes)))

    def add_job_errors(self, pattern: str, errors: list[dict[str, Any]]) -> None:
        """Failed jobs of tasks named like ``pattern`` report ``errors[attempt]`` (the last repeats):
        e.g. ``{"pilotErrorCode": 1212, "transExitCode": 0, ...}`` for jobs killed for memory."""
        with self.lock:
            self.job_errors.insert(0, (re.compile(pattern), [dict(e) for e in errors]))

    def _job_error(self, task: Task) -> dict[str, Any]:
        for pattern, errors in self.job_errors:
            if pattern.search(task.name):
                return dict(errors[min(task.attempt, len(errors) - 1)])
        return dict(FAILED_JOB_ERROR)

    def _outcomes_for(self, name: str, params: dict[str, Any]) -> list[str]:
        for pattern, outcomes in self.rules:
            if pattern.search(name):
                return list(outcomes)
        return ["done"]

    # --- clock --------------------------------------------------------------------------------

    def _schedule(self, task: Task, path: list[str]) -> None:
        task.path = list(path)
        task.due = self.clock.now() + self.step
        heapq.heappush(self._heap, (task.due, task.task_id))

    def advance(self) -> None:
        """Apply every transition that is due by now."""
        with self.lock:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, task_id = heapq.heappop(self._heap)
                task = self.tasks.get(task_id)
                if task is None or task.due != due or not task.path:
                    continue
                self._set_status(task, task.path.pop(0))
                if task.path:
                    task.due = due + self.step
                    heapq.heappush(self._heap, (task.due, task.task_id))

    def _set_status(self, task: Task, status: str) -> None:
        if status.startswith(NEW_ATTEMPT):
            status = status[len(NEW_ATTEMPT):]
            task.attempt += 1
        task.status = status
        task.modified = task.state_changed = self.clock.wall()
        if task.after_command and self.backdate_commands:
            task.modified -= timedelta(seconds=self.backdate_commands)
        if status in api.TASK_STOPPED:
            task.after_command = False
        if status == "broken":
            task.error_dialog = BROKEN_DIALOG
        if status == "ready":
            self._make_jobs(task)
        elif status == "running":
            self._jobs_to(task, "running", only_active=True)
        elif status == "prepared":  # the jobs are over; JEDI's post-processing decides next
            self._finish_jobs(task, task.path[0] if task.path else "done")
        elif status in ("done", "finished", "failed", "exhausted", "broken"):
            self._finish_jobs(task, status)
        elif status == "aborted":
            self._jobs_to(task, "cancelled", only_active=True)
        if status == "running" and task.outcome != "hang" and not task.path:
            # as JEDI does: done, finished and failed come after 'prepared'
            task.path = ["prepared", task.outcome] if task.outcome in POST_PROCESSED else [task.outcome]

    def _make_jobs(self, task: Task) -> None:
        """New jobs for an attempt: all of them at first, then one per job the last attempt lost."""
        wall = self.clock.wall()
        previous = [self.jobs[j] for j in task.job_ids if self.jobs[j].attempt == task.attempt]
        failed = [job for job in previous if job.status in api.JOB_FAILED]
        for _ in range(len(failed) or task.n_jobs):
            job = Job(next(self._job_ids), task.task_id, "activated", task.attempt + 1,
                      task.params.get("site") or "TEST_SITE", wall, wall)
            self.jobs[job.panda_id] = job
            task.job_ids.append(job.panda_id)

    def _active_jobs(self, task: Task) -> list[Job]:
        return [self.jobs[j] for j in task.job_ids if self.jobs[j].status not in JOB_FINAL]

    def _jobs_to(self, task: Task, status: str, only_active: bool) -> None:
        wall = self.clock.wall()
        for job in self._active_jobs(task) if only_active else [self.jobs[j] for j in task.job_ids]:
            job.status, job.modified = status, wall

    def _finish_jobs(self, task: Task, status: str) -> None:
        wall = self.clock.wall()
        active = self._active_jobs(task)
        for index, job in enumerate(active):
            fail = status in ("failed", "exhausted") or (status == "finished" and index % 2 == 0)
            if status == "broken":
                job.status = "cancelled"
            elif fail:
                job.status, job.error = "failed", self._job_error(task)
            else:
                job.status = "finished"
            job.modified = wall

    # --- the API's actions --------------------------------------------------------------------

    def submit(self, params: dict[str, Any], user: User, prod: bool, parent_tid: int | None) -> tuple[int, str]:
        """insertTaskParamsPanda: (code, message) with the real server's codes and messages."""
        with self.lock:
            self.advance()
            params = dict(params)
            if not prod or "userName" not in params:
                params["userName"] = user.dn
            if not prod or "taskType" not in params:
                params["taskType"] = "anal"
                params["taskPriority"] = 1000
            name = params.get("taskName")
            if not isinstance(name, str):
                return SubmitCode.SERVER_ERROR, "failed to register task"
            vo = params.get("vo") or "atlas"
            label = params.get("prodSourceLabel") or "user"
            if parent_tid is not None and parent_tid not in self.tasks:
                return SubmitCode.PARENT_NOT_FOUND, f"failed to find parent with jediTaskID={parent_tid}"
            if params["taskType"] == "anal" and params.get("uniqueTaskName") is True:
                same = [t for t in self.tasks.values()
                        if (t.vo, t.label, t.owner, t.name) == (vo, label, params["userName"], name)]
                if same:
                    old = max(same, key=lambda t: t.task_id)
                    if old.status == "registered":
                        return SubmitCode.DUPLICATE_DEFT, (
                            f"jediTaskID={old.task_id} is already queued for outDS={name}. "
                            "You cannot submit duplicated tasks. ")
                    if old.status not in api.RESUBMITTABLE_FROM:
                        message = messages.submit_duplicate_message(old.task_id, old.status, name)
                        return SubmitCode.DUPLICATE_JEDI, message
                    message = messages.submit_incremental_message(old.task_id, old.status)
                    self._restart(old, "toincexec")
                    return SubmitCode.INCREMENTAL, message
            wall = self.clock.wall()
            task = Task(next(self._task_ids), name, params, params["userName"], vo, label, "registered",
                        self._outcomes_for(name, params), wall, wall)
            task.parent = parent_tid
            self.tasks[task.task_id] = task
            self._schedule(task, list(ATTEMPT_PATH[1:]))
            return SubmitCode.NEW, messages.submit_new_message(task.task_id)

    def bulk_running(self, n: int, user: User, outcomes: list[str], jobs: int = 1, age: float = 0.0) -> list[int]:
        """Control (benchmarks): n tasks of ``user`` already running, with ``jobs`` jobs each
        (more than one: kept as a block, so 100 tasks of 100,000 jobs fit in memory), last
        modified ``age`` seconds ago."""
        with self.lock:
            ids = []
            for _ in range(n):
                wall = self.clock.wall()
                task = Task(next(self._task_ids), f"user.bulk.{uuid.uuid4().hex[:12]}", {"nEvents": 1},
                            user.dn, "atlas", "user", "ready", check_outcomes(outcomes), wall, wall)
                self.tasks[task.task_id] = task
                if jobs > 1:
                    first = next(self._job_ids)
                    self._job_ids = itertools.count(first + jobs)
                    task.block = range(first, first + jobs)
                    self._blocks.append((first, task.task_id))
                else:
                    self._make_jobs(task)
                self._set_status(task, "running")
                if task.path:
                    self._schedule(task, task.path)
                if age:
                    task.created = task.modified = self.clock.wall() - timedelta(seconds=age)
                ids.append(task.task_id)
            return ids

    def _restart(self, task: Task, via: str, at_once: bool = False) -> None:
        """A new attempt. Commands act as JEDI's TaskCommando does: the task keeps its status (the
        old ``failed``, say) for one step, then goes ``via`` with attemptNr + 1, ready, running."""
        task.after_command = True
        if at_once:
            task.attempt += 1
            self._set_status(task, via)
            self._schedule(task, ["ready", "running"])
        else:
            self._schedule(task, [NEW_ATTEMPT + via, "ready", "running"])

    def visible(self, task_id: int) -> Task | None:
        """A task as JEDI sees it: not yet there while only DEFT has it (status registered), or
        while :meth:`hide` holds it back."""
        with self.lock:
            self.advance()
            if not self._read(task_id):
                return None
            task = self.tasks.get(task_id)
            if task is None or task.status == "registered":
                return None
            left, refined = self.held.get(task_id, (0, True))
            if not left:
                return task
            self.held[task_id] = (left - 1, refined)
            if refined:  # on hold (waiting for its parent or input), its owner and name set
                return replace(task, status="registered")
            return replace(task, status=api.TASK_UNREFINED, owner=api.UNREFINED_OWNER, name=str(uuid.uuid4()),
                           job_ids=[])

    def _visible_task(self, task_id: int) -> Task | None:
        """The task itself (not an unrefined copy) if it is visible: for changes."""
        return None if self.visible(task_id) is None else self.tasks[task_id]

    def _read(self, task_id: int) -> bool:
        """Count one read of a task by a client; False while it is hidden."""
        if task_id in self.tasks:
            self.tasks[task_id].reads += 1
        if self.hidden.get(task_id):
            self.hidden[task_id] -= 1
            return False
        if task_id in self.scripted:
            left, status = self.scripted[task_id]
            if left <= 1:
                del self.scripted[task_id]
                self.force(task_id, status=status)
            else:
                self.scripted[task_id] = (left - 1, status)
        return True

    def hide(self, task_id: int, reads: int) -> None:
        """Control: the task stays invisible (only DEFT has it) for its next ``reads`` reads."""
        with self.lock:
            self.hidden[task_id] = reads

    def registered(self, task_id: int, reads: int, refined: bool = False) -> None:
        """Control: for its next ``reads`` reads the task reads ``registered``: as JEDI first has it,
        before its TaskRefiner runs (owner ``tobeset``, a random taskName, so its owner's commands
        are refused and listings and name lookups miss it), or ``refined`` and on hold (waiting for
        its parent: owner and name set, commands accepted)."""
        with self.lock:
            self.held[task_id] = (reads, refined)

    def _unrefined(self, task_id: int) -> bool:
        left, refined = self.held.get(task_id, (0, True))
        return bool(left) and not refined

    def after_reads(self, task_id: int, reads: int, status: str) -> None:
        """Control: the task takes ``status`` on its ``reads``-th next read by a client (a status
        read, or a listing in tasks-modified-since), so a test sees a waiter poll several times."""
        with self.lock:
            self.scripted[task_id] = (reads, status)

    def owns(self, task_id: int, user: User, prod: bool) -> bool:
        """validate_ownership_or_production_role."""
        if prod:
            return True
        task = self.visible(task_id)
        return task is not None and task.owner == user.dn

    def command(self, task_id: int, command: str, user: User, prod: bool, **kwargs: Any) -> tuple[int, str]:
        """sendCommandTaskPanda: registered commands act one clock step later, as JEDI would."""
        with self.lock:
            view = self.visible(task_id)  # an unrefined copy, or the task
            if view is None:
                return CommandCode.NOT_FOUND, messages.command_not_found_message(task_id)
            task = self.tasks[task_id]
            allowed = command_allowed(command, view.status)
            extra = ""
            if command == "retry" and view.status == "exhausted" and not prod:
                allowed, extra = False, "and production role is missing"
            if not allowed:
                if command == "retry" and view.status in RETRY_ACTIVE_FROM and task.label == "user":
                    return CommandCode.RETRY_ACTIVE, view.status
                return CommandCode.BAD_STATUS, messages.command_rejected_message(command, view.status, extra)
            # the server only queues kill and finish (PRODSYS_COMM); JEDI's TaskCommando acts later,
            # so the task keeps its status (``exhausted``, say) for one step, as after a retry
            self._hold(command)
            task.after_command = True
            if command == "kill":
                self._schedule(task, ["toabort", "aborted"])
            elif command == "finish":
                # soft: running jobs complete; hard: they are killed. The end depends on the jobs.
                self._jobs_to(task, "finished" if kwargs.get("soft") else "cancelled", only_active=True)
                self._schedule(task, ["passed", self._end_after_finish(task)])
            elif command == "retry":
                self._restart(task, "toretry")
            elif command == "resume":
                self._set_status(task, "running")
            return CommandCode.REGISTERED, messages.command_registered_message(command, task_id)

    def _end_after_finish(self, task: Task) -> str:
        """done if every job of the attempt finished, finished if some did, failed if none."""
        jobs = [self.jobs[j] for j in task.job_ids if self.jobs[j].attempt == task.attempt + 1]
        good = sum(job.status == "finished" for job in jobs)
        return "done" if jobs and good == len(jobs) else "finished" if good else "failed"

    def retry_with_params(self, task_id: int, new_params: dict[str, Any], user: User,
                          prod: bool) -> tuple[int, str]:
        """retry with new_parameters: the merged parameters are re-inserted (allowActiveTask)."""
        with self.lock:
            task = self._visible_task(task_id)
            if task is None:
                return 1, "new parameter conversion failed with task not found"
            if task.status in RETRY_ACTIVE_FROM:
                task.params.update(new_params)
                return SubmitCode.INCREMENTAL, messages.retry_active_message(task.status)
            if task.status not in api.RESUBMITTABLE_FROM:
                return SubmitCode.DUPLICATE_JEDI, messages.submit_duplicate_message(task_id, task.status, task.name)
            task.params.update(new_params)
            message = messages.submit_incremental_message(task_id, task.status)
            self._hold("retry")
            self._restart(task, "toincexec")
            return SubmitCode.INCREMENTAL, message

    def reactivate(self, task_id: int) -> tuple[int, str]:
        with self.lock:
            task = self._visible_task(task_id)
            if task is not None:
                self._restart(task, "ready", at_once=True)
            n_inputs = task.n_jobs if task else 0
            return 0, f"updated {n_inputs} inputs and task {task_id} was reactivated "

    def recover_files(self, task_id: int, dry_run: bool, user: User) -> None:
        """A lost-file recovery request: unless a dry run, JEDI retries the task to remake the files."""
        with self.lock:
            self.recovery_requests.append({"task_id": task_id, "dry_run": dry_run, "user": user.dn})
            task = self._visible_task(task_id)
            if task is not None and not dry_run and task.status in api.COMMAND_ALLOWED_FROM["incexec"]:
                task.recoveries += 1
                self._hold("recover")
                if task.status == "done":
                    # resetFileStatusInJEDI: a bare UPDATE to finished (the lost outputs no longer count),
                    # attemptNr, stateChangeTime and errorDialog unchanged; then the retry
                    task.status = "finished"
                self._restart(task, "toretry")

    def _hold(self, command: str) -> None:
        if command in self.hold_after:
            self.clock.freeze(True)

    def force(self, task_id: int, status: str | None = None, outcomes: list[str] | None = None,
              backdate: float | None = None) -> Task:
        """Control: set a task's status now and/or its outcomes from the current attempt on.
        ``backdate``: write the status with a modificationTime that many seconds in the past, as
        JEDI does on purpose (TaskCommando ``setOldModTime``: 1 h; ``updateTaskModTimeJEDI``: 1 day)."""
        with self.lock:
            self.advance()
            task = self.tasks[task_id]
            if outcomes is not None:
                task.outcomes = task.outcomes[: task.attempt] + check_outcomes(outcomes)
            if status is not None:
                task.path = []
                self._set_status(task, status)
                if status == "running" and task.path:
                    self._schedule(task, task.path)
                if backdate:
                    task.modified = self.clock.wall() - timedelta(seconds=float(backdate))
            return task

    def modified_since(self, user: User, since: datetime, label: str) -> dict[Any, dict[str, Any]]:
        """getJediTasksInTimeRange: keyed by reqID, as the server does."""
        with self.lock:
            self.advance()
            since = max(since, self.clock.wall() - MODIFIED_SINCE_MAX_RANGE)  # as TaskBuffer clamps it
            found: dict[Any, dict[str, Any]] = {}
            for task in list(self.tasks.values()):
                if task.owner != user.dn or task.label != label or task.modified < since:
                    continue
                if task.status == "registered" or self._unrefined(task.task_id) or not self._read(task.task_id):
                    continue
                req_id = task.params.get("reqID", task.task_id)
                found[req_id] = {
                    "jediTaskID": task.task_id, "modificationTime": task.modified, "status": task.status,
                    "processingType": task.params.get("processingType"), "transUses": task.params.get("transUses"),
                    "transHome": task.params.get("transHome"), "architecture": task.params.get("architecture"),
                    "reqID": req_id, "creationDate": task.created, "site": task.params.get("site"),
                    "cloud": task.params.get("cloud"), "taskName": task.name,
                }
            return found

    def detailed_info(self, task: Task) -> dict[str, Any]:
        """``task/get_detailed_info``: the JediTaskSpec fields a client reads, and file progress."""
        with self.lock:
            jobs = [self.jobs[j] for j in task.job_ids]
            n_files = task.n_jobs
            newest = [j for j in jobs if j.attempt == task.attempt + 1] or jobs
            finished = sum(j.status == "finished" for j in jobs)
            failed = sum(j.status in api.JOB_FAILED for j in newest) if task.status in api.TASK_FINAL else 0
            return {
                "jediTaskID": task.task_id, "taskName": task.name, "status": task.status,
                "attemptNr": task.attempt, "stateChangeTime": task.state_changed,
                "modificationTime": task.modified, "creationDate": task.created, "errorDialog": task.error_dialog,
                "userName": task.owner, "vo": task.vo, "prodSourceLabel": task.label,
                "taskType": task.params.get("taskType"), "parent_tid": task.parent,
                "nFiles": n_files, "nFilesFinished": min(finished, n_files), "nFilesFailed": min(failed, n_files),
                "nFilesMissing": 0, "pctFinished": round(100 * min(finished, n_files) / n_files),
                "pctFailed": round(100 * min(failed, n_files) / n_files), "raw_task_params": dict(task.params),
                "ramCount": task.params.get("ramCount"), "ramUnit": task.params.get("ramUnit"),
            }

    def find(self, user: User, criteria: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        """``task/get_tasks_detailed_info_since`` without ``since``: the user's tasks matching
        equality criteria (or regular expressions), as detailed infos."""
        with self.lock:
            self.advance()
            found = []
            oldest = self.clock.wall() - timedelta(days=api.LOOKUP_WINDOW_DAYS)  # getTaskIDsWithCriteria_JEDI
            for task in sorted(self.tasks.values(), key=lambda t: t.task_id):
                if task.owner != user.dn or task.status == "registered" or task.modified < oldest \
                        or self._unrefined(task.task_id):
                    continue
                info = self.detailed_info(task)
                if all(_matches(info.get(k), v) for k, v in criteria.items()):
                    found.append(info)
            return found[:limit]

    def job_metadata(self, task_id: int) -> dict[str, Any]:
        with self.lock:
            self.advance()
            task = self.tasks.get(task_id)
            if task is None:
                return {}
            return {
                str(j): {"exitCode": 0, "nEvents": task.params.get("nEventsPerJob", 1), "attempt": self.jobs[j].attempt}
                for j in task.job_ids if self.jobs[j].status == "finished"
            }

    def describe_jobs(self, job_ids: list[int]) -> list[dict[str, Any] | None]:
        with self.lock:
            self.advance()
            out: list[dict[str, Any] | None] = []
            for panda_id in job_ids:
                job = self.jobs.get(panda_id) or self._block_job(panda_id)
                out.append(job.describe(self.tasks[job.task_id]) if job else None)
            return out

    def task_job_descriptions(self, task_id: int, unsuccessful_only: bool) -> list[dict[str, Any]]:
        """``task/get_job_descriptions``: the task's jobs (or its failed, cancelled and closed ones),
        at most 5500, as panda-server 1.0.4 answers (``getPandaIDsWithTaskID`` then the descriptions)."""
        with self.lock:
            self.advance()
            task = self.tasks.get(task_id)
            if task is None:
                return []
            ids = [j for j in task.all_job_ids][: api.MAX_JOB_IDS_PER_CALL * 4]
            jobs = [d for d in self.describe_jobs(ids) if d is not None]
            if unsuccessful_only:
                jobs = [d for d in jobs if d["jobStatus"] in api.JOB_FAILED]
            return jobs[: api.MAX_JOB_IDS_PER_CALL]

    def _block_job(self, panda_id: int) -> Job | None:
        """A job of a block: its status follows its task's."""
        index = bisect.bisect_right(self._blocks, (panda_id, 1 << 62)) - 1
        if index < 0:
            return None
        task = self.tasks[self._blocks[index][1]]
        if panda_id not in task.block:
            return None
        status = BLOCK_JOB_STATUS.get(task.status, "activated")
        job = Job(panda_id, task.task_id, status, task.attempt + 1, task.params.get("site") or "TEST_SITE",
                  task.created, task.modified)
        if status == "failed":
            job.error = self._job_error(task)
        return job

    def kill_jobs(self, job_ids: list[int], user: User, prod: bool) -> list[bool]:
        with self.lock:
            self.advance()
            result = []
            for panda_id in job_ids:
                job = self.jobs.get(panda_id)
                ok = job is not None and job.status not in JOB_FINAL and (
                    prod or self.tasks[job.task_id].owner == user.dn)
                if ok:
                    job.status, job.modified = "cancelled", self.clock.wall()
                result.append(ok)
            return result

    def set_job_command(self, job_id: int, command: str) -> tuple[bool, str]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.status in JOB_FINAL:
                return False, f"PandaID={job_id} not found in active DB"
            return True, f"command={command} set to PandaID={job_id}"

    # --- datasets and files (JEDI_Datasets, JEDI_Dataset_Contents) -------------------------------

    def task_datasets(self, task: Task) -> list[dict[str, Any]]:
        """The task's datasets as JEDI makes them from its parameters: one per template with a
        ``dataset`` (inputs, outputs) and the ``log``, or a pseudo input for a task without input. An
        output or log container ``X/`` becomes the dataset ``X.<id>.<id>``, as panda-server 1.0.4 + JEDI
        name it (seen on the real server)."""
        items = [i for i in task.params.get("jobParameters") or [] if isinstance(i, dict)]
        if isinstance(task.params.get("log"), dict):
            items.append(task.params["log"])
        datasets: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item in items:
            name = item.get("dataset")
            if item.get("type") != "template" or not isinstance(name, str) or name in seen:
                continue
            seen.add(name)
            kind = item.get("param_type")
            ident = task.task_id * 100 + len(datasets) + 1
            real = f"{name[:-1]}.{ident}.{ident}" if kind in api.OUTPUT_DATASET_TYPES and name.endswith("/") else name
            datasets.append({"name": real, "container": item.get("container") or name, "type": kind,
                             "template": item.get("value"), "id": ident})
        if not any(d["type"] == "input" for d in datasets):
            datasets.insert(0, {"name": "pseudo_dataset", "container": None, "type": "pseudo_input",
                                "template": "pseudo_lfn", "id": task.task_id * 100})
        return datasets

    def _files(self, task: Task, dataset: dict[str, Any]) -> list[dict[str, Any]]:
        """JEDI_Dataset_Contents of one dataset: a row per job of the task, its status following the
        job's (``running``, then ``finished`` or ``failed``). An output or log file is named from its
        template with ``${SN}`` filled in, and ``$JEDITASKID`` once the job ended (as JEDI does); an
        input lists the files another task produced into that container."""
        if dataset["type"] == "input":
            name = dataset["name"].split(":", 1)[-1]
            for other in self.tasks.values():
                for produced in self.task_datasets(other) if other.task_id != task.task_id else []:
                    if produced["type"] == "output" and name.rstrip("/") == produced["container"].rstrip("/"):
                        return [dict(f, status="ready") for f in self._files(other, produced)
                                if f["status"] == "finished"]
            return []
        files = []
        for serial, panda_id in enumerate(task.job_ids, start=1):
            job = self.jobs[panda_id]
            status = ("finished" if job.status == "finished" else "failed" if job.status in api.JOB_FAILED
                      else "running")
            lfn = str(dataset["template"] or f"{dataset['name']}.${{SN}}")
            lfn = lfn.replace("${SN/P}", f"{serial:06d}").replace("${SN}", f"{serial:06d}")
            if status != "running":
                lfn = lfn.replace("$JEDITASKID", str(task.task_id))
            files.append({"lfn": lfn, "scope": None, "id": panda_id * 100 + dataset["id"] % 100, "status": status})
        return files

    def datasets_and_files(self, task_id: int, dataset_types: list[str]) -> list[dict[str, Any]]:
        """``task/get_datasets_and_files``: the task's datasets of those types with their files."""
        with self.lock:
            self.advance()
            task = self.tasks.get(task_id)
            if task is None or task.status == "registered":
                return []
            return [{"dataset": {"name": d["name"], "id": d["id"]}, "files": self._files(task, d)}
                    for d in self.task_datasets(task) if d["type"] in dataset_types]

    def task_details(self, task_id: int, include_parameters: bool, include_status: bool) -> dict[str, Any]:
        """``task/get_details`` (getJediTaskDetails): containers in and out, file statistics, PandaIDs.
        An unknown task gives an empty digest, or nothing (an error) when its status is asked for."""
        with self.lock:
            self.advance()
            task = self.tasks.get(task_id)
            if task is None or task.status == "registered":
                if include_status:
                    return {}
                return {"inDS": "", "outDS": "", "statistics": "", "PandaID": [], "mergeStatus": None,
                        "mergePandaID": []}
            datasets = self.task_datasets(task)
            ins = [d["container"] for d in datasets if d["type"] == "input"]
            outs = [d["container"] for d in datasets if d["type"] in api.OUTPUT_DATASET_TYPES]
            counts: dict[str, int] = {}
            for job in (self.jobs[j] for j in task.job_ids):
                key = job.status if job.status in ("finished", "activated", "running") else (
                    "failed" if job.status in api.JOB_FAILED else "picked")
                counts[key] = counts.get(key, 0) + 1
            details: dict[str, Any] = {
                "inDS": ",".join(dict.fromkeys(ins)), "outDS": ",".join(dict.fromkeys(outs)),
                "statistics": ",".join(f"{k}*{v}" for k, v in counts.items()),
                "PandaID": list(task.job_ids), "mergeStatus": None, "mergePandaID": [],
            }
            if include_status:
                details["status"] = task.status
            if include_parameters:
                details["cliParams"] = task.params.get("cliParams", "")
            return details

    def new_log_name(self) -> str:
        return f"jedilog/lost_file_recovery.{uuid.uuid4()}.log"
