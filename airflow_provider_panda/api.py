"""The PanDA REST API, written once: endpoints, codes, statuses and what answers mean.

Every caller (the sync hook, the trigger, the local server, the tests) takes paths, codes and
status lists from here: what a client needs to know to call PanDA and read its answers. What only
the server side uses lives with the local server: the messages only a server writes and the
envelope (:mod:`airflow_provider_panda.testing.messages`), the rules by which a server decides
(:mod:`airflow_provider_panda.testing.sim`, :mod:`airflow_provider_panda.testing.server`); the
pilot's endpoints are the harness's.
Facts come from panda-server 1.0.4 (``pandaserver/api/v1``) and panda-client 2.2.0; see
``../shared/panda-api.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any

API_PREFIX = "/api/v1"
DEFAULT_MONITOR_URL = "https://bigpanda.cern.ch"


@dataclass(frozen=True)
class Endpoint:
    """One PanDA REST call: ``<base>/api/v1/<name>`` with its HTTP method and access rules."""

    name: str
    method: str
    secure: bool = True
    production: bool = False
    task_owner: bool = False

    @property
    def path(self) -> str:
        return f"{API_PREFIX}/{self.name}"


IS_ALIVE = Endpoint("system/is_alive", "GET", secure=False)
TASK_SUBMIT = Endpoint("task/submit", "POST")
TASK_GET_STATUS = Endpoint("task/get_status", "GET")
TASK_GET_PARAMS = Endpoint("task/get_task_parameters", "GET")
TASK_GET_JOB_IDS = Endpoint("task/get_job_ids", "GET")
TASK_KILL = Endpoint("task/kill", "POST", task_owner=True)
TASK_FINISH = Endpoint("task/finish", "POST", task_owner=True)
TASK_RETRY = Endpoint("task/retry", "POST", task_owner=True)
TASK_RESUME = Endpoint("task/resume", "POST", production=True)
TASK_REACTIVATE = Endpoint("task/reactivate", "POST", production=True)
TASK_MODIFIED_SINCE = Endpoint("task/get_tasks_modified_since", "GET")
#: Every JediTaskSpec field of one task (status, attemptNr, stateChangeTime, errorDialog, ...) plus
#: input-file progress (nFiles, nFilesFinished, nFilesFailed, pctFinished) and ``raw_task_params``.
TASK_DETAILED_INFO = Endpoint("task/get_detailed_info", "GET")
#: The caller's tasks matching field filters (``{"taskName": name}``), each as get_detailed_info has
#: it; only tasks modified within the server's 90-day window are searched.
TASK_DETAILED_INFO_SINCE = Endpoint("task/get_tasks_detailed_info_since", "GET")
#: A task's datasets of the given types (``dataset_types``, default input) with their files:
#: ``[{"dataset": {"name", "id"}, "files": [{"lfn", "scope", "id", "status"}]}]``; ``success: false``
#: "No data found for the task" when it has none. ``dataset_only`` is ignored by the server.
TASK_DATASETS_AND_FILES = Endpoint("task/get_datasets_and_files", "GET")
#: A task's digest (getJediTaskDetails): ``inDS`` and ``outDS`` (comma-joined container names),
#: ``statistics``, ``PandaID``; ``status`` with ``include_status``, ``cliParams`` with ``include_parameters``.
TASK_DETAILS = Endpoint("task/get_details", "GET")
#: The descriptions of a task's jobs (``unsuccessful_only``: failed, cancelled, closed), at most
#: :data:`MAX_JOB_IDS_PER_CALL` of them; ``[]`` when it has none. One call, no job id list.
TASK_JOB_DESCRIPTIONS = Endpoint("task/get_job_descriptions", "GET")
JOB_DESCRIPTION = Endpoint("job/get_description", "POST")
JOB_DESCRIPTION_ARCHIVE = Endpoint("job/get_description_incl_archive", "POST")
JOB_KILL = Endpoint("job/kill", "POST")
JOB_METADATA = Endpoint("job/get_metadata_for_analysis_jobs", "GET")
JOB_SET_COMMAND = Endpoint("job/set_command", "POST", production=True)
FILE_RECOVERY = Endpoint("file_server/upload_file_recovery_request", "POST", task_owner=True)
FILE_UPLOAD = Endpoint("file_server/upload_cache_file", "POST")
FILE_VALIDATE = Endpoint("file_server/validate_cache_file", "POST")

ENDPOINTS: tuple[Endpoint, ...] = (
    IS_ALIVE, TASK_SUBMIT, TASK_GET_STATUS, TASK_GET_PARAMS, TASK_GET_JOB_IDS, TASK_KILL,
    TASK_FINISH, TASK_RETRY, TASK_RESUME, TASK_REACTIVATE, TASK_MODIFIED_SINCE, TASK_DETAILED_INFO,
    TASK_DETAILED_INFO_SINCE, TASK_DATASETS_AND_FILES, TASK_DETAILS, TASK_JOB_DESCRIPTIONS, JOB_DESCRIPTION,
    JOB_DESCRIPTION_ARCHIVE, JOB_KILL, JOB_METADATA, JOB_SET_COMMAND, FILE_RECOVERY, FILE_UPLOAD,
    FILE_VALIDATE,
)


def auth_config_path(vo: str) -> str:
    """Where a server publishes the OIDC client settings of a VO (read by panda-client)."""
    return f"/auth/{vo}_auth_config.json"


# --- codes ------------------------------------------------------------------------------------


class CommandCode(IntEnum):
    """``data`` of a task command answer (kill, finish, retry, resume, reactivate)."""

    REGISTERED = 0
    SERVER_ERROR = 1
    NOT_FOUND = 2
    PERMISSION_DENIED = 3
    BAD_STATUS = 4
    RETRY_ACTIVE = 5  # internal to the server: retry of failed jobs of a running task


class SubmitCode(IntEnum):
    """``data`` of a ``task/submit`` answer; ``success`` is true for NEW and INCREMENTAL."""

    NEW = 0
    DUPLICATE_DEFT = 1
    DUPLICATE_JEDI = 2
    INCREMENTAL = 3
    SERVER_ERROR = 4
    TOO_MANY_TASKS = 10
    PARENT_NOT_FOUND = 11


SUBMIT_DUPLICATE_CODES = frozenset({SubmitCode.DUPLICATE_DEFT, SubmitCode.DUPLICATE_JEDI})

# --- statuses ---------------------------------------------------------------------------------

TASK_STATUSES: tuple[str, ...] = (
    "registered", "defined", "assigning", "ready", "pending", "scouting", "scouted", "running",
    "prepared", "finishing", "done", "finished", "failed", "aborting", "aborted", "tobroken",
    "broken", "toretry", "toincexec", "rerefine", "paused", "throttled", "exhausted", "passed",
    "toabort", "toreassign", "reassigning", "staging", "submitting", "merging",
)
#: Statuses a task never leaves by itself.
TASK_FINAL = frozenset({"done", "finished", "failed", "broken", "aborted"})
#: ``exhausted`` is not final but stops the task until somebody acts: a waiter must stop too.
TASK_STOPPED = TASK_FINAL | {"exhausted"}
TASK_DEFAULT_SUCCESS: tuple[str, ...] = ("done",)
#: A task JEDI has taken from DEFT but not yet refined: it reads ``registered`` and its owner is
#: ``tobeset`` until JEDI's TaskRefiner sets it, so meanwhile the server refuses its owner's commands
#: with :data:`MESSAGE_TASK_OWNER` (seconds; longer when JEDI is busy).
TASK_UNREFINED = "registered"
UNREFINED_OWNER = "tobeset"
TASK_DEFAULT_FAILURE: tuple[str, ...] = ("failed", "broken", "aborted", "exhausted", "finished")

#: Statuses of a job that ended badly (``finished`` is the one good end).
JOB_FAILED = frozenset({"failed", "closed", "cancelled"})

#: Task statuses in which the server refuses each command (``CommandCode.BAD_STATUS``).
COMMAND_REFUSED_IN: dict[str, frozenset[str]] = {
    "kill": frozenset({"finished", "done", "prepared", "broken", "aborted", "toabort", "aborting", "failed"}),
    "finish": frozenset({"finished", "done", "prepared", "broken", "aborted", "toabort", "aborting", "failed"}),
}
#: Task statuses from which a command is accepted, for commands defined by their allowed set.
COMMAND_ALLOWED_FROM: dict[str, frozenset[str]] = {
    "retry": frozenset({"finished", "failed", "exhausted"}),
    "resume": frozenset({"paused", "throttled", "staging"}),
    "incexec": frozenset({"finished", "failed", "aborted", "done", "exhausted"}),
}
#: The only task type panda-server checks for duplicate names (``insertTaskParamsPanda``). It forces
#: it on callers without the production role, so a submission without ``taskType`` gets it too.
DUPLICATE_CHECKED_TASK_TYPE = "anal"


def submission_is_repeatable(params: dict[str, Any]) -> bool:
    """Whether the server answers a repeat of this submission as a duplicate, so that resending it
    after a lost answer cannot create a second task: ``uniqueTaskName`` and a checked task type."""
    return params.get("uniqueTaskName") is True and params.get("taskType") in (None, DUPLICATE_CHECKED_TASK_TYPE)


#: Task statuses in which a same-name submission is a duplicate (not an incremental execution).
RESUBMITTABLE_FROM = COMMAND_ALLOWED_FROM["incexec"]


# --- limits -----------------------------------------------------------------------------------

MB = 1024 * 1024
SANDBOX_NO_BUILD_LIMIT = 10 * MB
SANDBOX_LIMIT = 768 * MB
MAX_JOB_IDS_PER_CALL = 5500
MAX_PILOT_COMMAND_LENGTH = 250
#: How far back ``task/get_tasks_detailed_info_since`` looks (``getTaskIDsWithCriteria_JEDI`` caps it).
LOOKUP_WINDOW_DAYS = 90
#: Characters that make the server apply a filter value as a regular expression over every task of
#: the caller instead of an SQL equality (``get_tasks_detailed_info_since``).
FILTER_REGEX_CHARACTERS = r"^$*+?\|()"


def upload_size_limit(file_name: str) -> int:
    """The cache server's size limit for a file: 768 MB for ``sources.*`` sandboxes, else 10 MB."""
    return SANDBOX_LIMIT if file_name.startswith("sources.") else SANDBOX_NO_BUILD_LIMIT


# --- messages a client reads ------------------------------------------------------------------

MESSAGE_PROD_ROLE = "production or pilot role required"
MESSAGE_TASK_OWNER = "not the task owner or no production role"
MESSAGE_NO_DATASETS = "No data found for the task"
#: How a submission answer that re-executes an existing task begins (code 3).
INCREMENTAL_PREFIX = "reactivation accepted."
_TASK_ID_IN_MESSAGE = re.compile(r"jediTaskID=(\d+)")


def task_id_in_message(message: str | None) -> int | None:
    """The jediTaskID a submission message names (``... jediTaskID=N ...``), or None."""
    match = _TASK_ID_IN_MESSAGE.search(message or "")
    return int(match.group(1)) if match else None


def is_incremental_message(message: str | None) -> bool:
    """Whether a submission answer says an existing finished task will be re-executed (code 3)."""
    return (message or "").startswith(INCREMENTAL_PREFIX)


# --- answers ----------------------------------------------------------------------------------

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: JEDI's dataset types of what a task produces (JEDI_Datasets.type).
OUTPUT_DATASET_TYPES: tuple[str, ...] = ("output", "log")
#: What ``task/get_datasets_and_files`` lists without ``dataset_types``.
DEFAULT_DATASET_TYPES: tuple[str, ...] = ("input", "pseudo_input")


def decode_special(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: datetimes the server writes as ``{"__datetime__": iso}``."""
    if "__datetime__" in obj and len(obj) == 1:
        return datetime.fromisoformat(obj["__datetime__"])
    return obj


def parse_statistics(text: Any) -> dict[str, int]:
    """``task/get_details``' ``statistics`` (``"finished*10,failed*2,running*3"``: the task's input
    files by the status of the job that holds them, ``tobedone`` and ``picked`` for files no job holds
    yet) as a dict; malformed parts are skipped."""
    counts: dict[str, int] = {}
    for part in str(text or "").split(","):
        name, _, number = part.partition("*")
        if name.strip() and number.strip().isdigit():
            counts[name.strip()] = counts.get(name.strip(), 0) + int(number)
    return counts


def monitor_task_url(monitor_url: str, task_id: int) -> str:
    """The BigPanDA-style monitor page of a task."""
    return f"{monitor_url.rstrip('/')}/task/{int(task_id)}/"
