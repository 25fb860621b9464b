"""Each PanDA call once: its validated request and how its answer becomes a value or an error.

A :class:`Call` is plain data, so the sync hook (requests) and the async path used by triggers
(httpx) send the same request and read the answer the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_provider_panda import api
from airflow_provider_panda.api import CommandCode, Endpoint, SubmitCode
from airflow_provider_panda.exceptions import (
    PandaCallFailed,
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaInputError,
    PandaNotFoundError,
    PandaPermissionError,
    PandaResponseError,
)

MAX_ID = 2**63 - 1
MAX_TASK_PARAMS_BYTES = 16 * api.MB


@dataclass(frozen=True)
class Call:
    """A request to send and the function that turns its envelope into the caller's value."""

    endpoint: Endpoint
    payload: dict[str, Any]
    interpret: Callable[[dict[str, Any]], Any]
    #: Whether sending it twice is harmless (reads, commands); a plain submission is not.
    idempotent: bool = True
    files: dict[str, Any] = field(default_factory=dict)
    #: Send to the cache server (extra ``cache_url``) instead of the main server.
    cache: bool = False


# --- validation -------------------------------------------------------------------------------


def check_id(value: Any, what: str = "jedi_task_id") -> int:
    """A PanDA id is a positive integer (bools and numeric strings are refused, not guessed)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PandaInputError(f"{what} must be a positive integer, got {type(value).__name__} {value!r:.60}")
    if not 0 < value <= MAX_ID:
        raise PandaInputError(f"{what} must be a positive integer below 2**63, got {value}")
    return value


def as_task_id(value: Any, what: str = "jedi_task_id") -> int:
    """A jediTaskID from an int or a rendered template string such as ``"12345"``."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    return check_id(value, what)


def check_ids(values: Any, what: str = "job_ids") -> list[int]:
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise PandaInputError(f"{what} must be a list of positive integers, got {type(values).__name__}")
    ids = [check_id(v, f"each of {what}") for v in values]
    if not ids:
        raise PandaInputError(f"{what} must not be empty")
    if len(ids) > api.MAX_JOB_IDS_PER_CALL:
        raise PandaInputError(f"{what} holds {len(ids)} ids; the server takes at most {api.MAX_JOB_IDS_PER_CALL}")
    return ids


def job_id_chunks(values: Any, what: str = "job_ids") -> list[list[int]]:
    """Any number of valid job ids, cut into chunks one call takes (the caller sends one call each)."""
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise PandaInputError(f"{what} must be a list of positive integers, got {type(values).__name__}")
    ids = [check_id(v, f"each of {what}") for v in values]
    if not ids:
        raise PandaInputError(f"{what} must not be empty")
    size = api.MAX_JOB_IDS_PER_CALL
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def check_task_params(params: Any) -> dict[str, Any]:
    """Task parameters: a JSON-serialisable dict with a non-empty string taskName."""
    if not isinstance(params, dict):
        raise PandaInputError(f"task parameters must be a dict, got {type(params).__name__}")
    name = params.get("taskName")
    if not isinstance(name, str) or not name.strip():
        raise PandaInputError("task parameters need a non-empty string 'taskName'")
    if "uniqueTaskName" in params and not isinstance(params["uniqueTaskName"], bool):
        raise PandaInputError("'uniqueTaskName' must be true or false")
    try:
        text = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PandaInputError(f"task parameters must be JSON-serialisable: {exc}") from None
    if len(text) > MAX_TASK_PARAMS_BYTES:
        raise PandaInputError(f"task parameters are {len(text)} bytes; at most {MAX_TASK_PARAMS_BYTES} are sent")
    return params


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise PandaInputError(f"{what} must be True or False, got {value!r:.40}")
    return value


# --- interpretation ---------------------------------------------------------------------------

_NOT_FOUND = re.compile(r"not found", re.IGNORECASE)


def failed(env: dict[str, Any]) -> PandaCallFailed:
    """The typed error for a ``success: false`` envelope."""
    message = str(env.get("message") or "")
    if message in (api.MESSAGE_TASK_OWNER, api.MESSAGE_PROD_ROLE):
        return PandaPermissionError(message, env.get("data"))
    if _NOT_FOUND.search(message):
        return PandaNotFoundError(message, env.get("data"))
    return PandaCallFailed(message or "the server said success: false without a message", env.get("data"))


def _data(env: dict[str, Any]) -> Any:
    if not env.get("success"):
        raise failed(env)
    return env.get("data")


def _typed(kind: type | tuple[type, ...], what: str) -> Callable[[dict[str, Any]], Any]:
    def interpret(env: dict[str, Any]) -> Any:
        data = _data(env)
        if not isinstance(data, kind):
            raise PandaResponseError(f"{what}: expected {kind}, the server sent {type(data).__name__}")
        return data

    return interpret


def _command(command: str, ok: Iterable[int] = (CommandCode.REGISTERED,)) -> Callable[[dict[str, Any]], str]:
    accepted = frozenset(int(c) for c in ok)

    def interpret(env: dict[str, Any]) -> str:
        code = env.get("data")
        message = str(env.get("message") or "")
        if isinstance(code, bool) or not isinstance(code, int):
            raise failed(env)
        if code in accepted:
            return message
        if code == CommandCode.NOT_FOUND:
            raise PandaNotFoundError(message, code)
        raise PandaCommandRejected(code, message, action=command)

    return interpret


def _submit(env: dict[str, Any]) -> int:
    message = str(env.get("message") or "")
    code = env.get("data")
    if env.get("success"):
        task_id = code if isinstance(code, int) and not isinstance(code, bool) else api.task_id_in_message(message)
        if task_id is None:
            raise PandaResponseError(f"submission accepted but no jediTaskID in the answer: {message!r:.200}")
        return task_id
    if isinstance(code, int) and not isinstance(code, bool) and code in api.SUBMIT_DUPLICATE_CODES:
        raise PandaDuplicateTaskError(code, message, api.task_id_in_message(message))
    if isinstance(code, int) and not isinstance(code, bool):
        raise PandaCommandRejected(code, message, api.task_id_in_message(message))
    raise failed(env)


def _modified_since(env: dict[str, Any]) -> dict[int, dict[str, Any]]:
    data = _data(env)
    if not isinstance(data, dict):
        raise PandaResponseError(f"tasks modified since: expected a dict, got {type(data).__name__}")
    # The server keys its answer by reqID, which several tasks may share: re-key by jediTaskID.
    tasks: dict[int, dict[str, Any]] = {}
    for info in data.values():
        if isinstance(info, dict) and isinstance(info.get("jediTaskID"), int):
            tasks[info["jediTaskID"]] = info
    return tasks


def _recovery(env: dict[str, Any]) -> str:
    data = _data(env)
    if not isinstance(data, dict) or "logFileURL" not in data:
        raise PandaResponseError("file recovery accepted without a logFileURL")
    return str(data["logFileURL"])


def _message(env: dict[str, Any]) -> str:
    if not env.get("success"):
        raise failed(env)
    return str(env.get("message") or "")


# --- the calls --------------------------------------------------------------------------------


def hello() -> Call:
    return Call(api.IS_ALIVE, {}, _message)


def submit_task(task_params: dict[str, Any], parent_task_id: int | None = None) -> Call:
    params = check_task_params(task_params)
    if parent_task_id is not None:
        check_id(parent_task_id, "parent_task_id")
    # Only a submission the server's duplicate check covers is answered as a duplicate when
    # repeated: only it is resent after a lost answer.
    return Call(
        api.TASK_SUBMIT,
        {"task_parameters": params, "parent_tid": parent_task_id},
        _submit,
        idempotent=api.submission_is_repeatable(params),
    )


def get_task_status(task_id: int) -> Call:
    return Call(api.TASK_GET_STATUS, {"task_id": check_id(task_id)}, _typed(str, "task status"))


def get_task_params(task_id: int) -> Call:
    return Call(api.TASK_GET_PARAMS, {"task_id": check_id(task_id)}, _typed(dict, "task parameters"))


def get_job_ids(task_id: int) -> Call:
    return Call(api.TASK_GET_JOB_IDS, {"task_id": check_id(task_id)}, _typed(list, "job ids"))


def kill_task(task_id: int) -> Call:
    return Call(api.TASK_KILL, {"task_id": check_id(task_id)}, _command("kill"))


def finish_task(task_id: int, soft: bool = False) -> Call:
    payload = {"task_id": check_id(task_id), "soft": check_bool(soft, "soft")}
    return Call(api.TASK_FINISH, payload, _command("finish"))


def retry_task(task_id: int, new_params: dict[str, Any] | None = None) -> Call:
    payload: dict[str, Any] = {"task_id": check_id(task_id)}
    if new_params:
        if not isinstance(new_params, dict):
            raise PandaInputError(f"new_params must be a dict, got {type(new_params).__name__}")
        try:
            json.dumps(new_params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PandaInputError(f"new_params must be JSON-serialisable: {exc}") from None
        payload["new_parameters"] = new_params
        # With new parameters the server re-inserts the task: 3 (re-executed) is its success.
        return Call(api.TASK_RETRY, payload, _command("retry", ok=(SubmitCode.INCREMENTAL,)))
    return Call(api.TASK_RETRY, payload, _command("retry"))


def resume_task(task_id: int) -> Call:
    return Call(api.TASK_RESUME, {"task_id": check_id(task_id)}, _command("resume"))


def reactivate_task(task_id: int) -> Call:
    return Call(api.TASK_REACTIVATE, {"task_id": check_id(task_id)}, _command("reactivate"))


def get_task_info(task_id: int) -> Call:
    """Task-level facts in one read: status, attemptNr, stateChangeTime, errorDialog, file counts."""
    return Call(api.TASK_DETAILED_INFO, {"task_id": check_id(task_id)}, _typed(dict, "task details"))


_DATASET_TYPE = re.compile(r"[a-z][a-z_]{0,39}")


def _datasets_and_files(env: dict[str, Any]) -> list[dict[str, Any]]:
    if not env.get("success") and str(env.get("message") or "") == api.MESSAGE_NO_DATASETS:
        return []  # the server's answer for a task without datasets of those types (or no such task)
    data = _data(env)
    if not isinstance(data, list) or not all(isinstance(d, dict) and isinstance(d.get("dataset"), dict)
                                              for d in data):
        raise PandaResponseError("datasets and files: expected a list of {dataset, files}")
    return data


def get_datasets_and_files(task_id: int, dataset_types: Iterable[str] = api.DEFAULT_DATASET_TYPES) -> Call:
    """A task's datasets of some types with their files; ``[]`` when it has none of them."""
    if isinstance(dataset_types, str) or not isinstance(dataset_types, Iterable):
        raise PandaInputError("dataset_types must be a list of dataset types such as ['output', 'log']")
    types = list(dataset_types)
    if not types or not all(isinstance(t, str) and _DATASET_TYPE.fullmatch(t) for t in types):
        raise PandaInputError(f"dataset_types must be non-empty JEDI dataset types, got {types!r:.80}")
    return Call(api.TASK_DATASETS_AND_FILES, {"task_id": check_id(task_id), "dataset_types": types},
                _datasets_and_files)


def get_task_details(task_id: int, include_parameters: bool = False, include_status: bool = False) -> Call:
    """A task's digest: ``inDS``/``outDS`` (comma-joined containers), ``statistics``, ``PandaID``."""
    payload = {"task_id": check_id(task_id), "include_parameters": check_bool(include_parameters, "include_parameters"),
               "include_status": check_bool(include_status, "include_status")}
    return Call(api.TASK_DETAILS, payload, _typed(dict, "task details"))


def _job_list(env: dict[str, Any]) -> list[dict[str, Any]]:
    data = _data(env)
    if not isinstance(data, list) or not all(isinstance(j, dict) for j in data):
        raise PandaResponseError("job descriptions: expected a list of jobs")
    return data


def get_job_descriptions(task_id: int, unsuccessful_only: bool = False) -> Call:
    """A task's job descriptions in one task-level call (the server caps them at 5500); with
    ``unsuccessful_only`` only its failed, cancelled and closed jobs."""
    payload = {"task_id": check_id(task_id), "unsuccessful_only": check_bool(unsuccessful_only, "unsuccessful_only")}
    return Call(api.TASK_JOB_DESCRIPTIONS, payload, _job_list)


def find_tasks_by_name(task_name: str) -> Call:
    """The caller's tasks named ``task_name`` (modified within the server's lookup window)."""
    if not isinstance(task_name, str) or not task_name.strip():
        raise PandaInputError("task_name must be a non-empty string")
    pattern = task_name
    if any(c in api.FILTER_REGEX_CHARACTERS for c in task_name):
        pattern = "^" + re.escape(task_name) + "$"  # the server applies it as a regex: anchor it
    payload = {"filters": json.dumps({"taskName": pattern})}

    def interpret(env: dict[str, Any]) -> list[dict[str, Any]]:
        data = _data(env)
        if not isinstance(data, list):
            raise PandaResponseError(f"task lookup: expected a list, the server sent {type(data).__name__}")
        return [t for t in data if isinstance(t, dict) and t.get("taskName") == task_name]

    return Call(api.TASK_DETAILED_INFO_SINCE, payload, interpret)


def get_tasks_modified_since(since: datetime | str, min_task_id: int | None = None) -> Call:
    if isinstance(since, datetime):
        since = since.strftime(api.TIME_FORMAT)
    if not isinstance(since, str):
        raise PandaInputError("since must be a datetime or a 'YYYY-mm-dd HH:MM:SS' string")
    try:
        datetime.strptime(since, api.TIME_FORMAT)
    except ValueError:
        raise PandaInputError(f"since must look like 'YYYY-mm-dd HH:MM:SS', got {since!r:.40}") from None
    payload: dict[str, Any] = {"since": since}
    if min_task_id is not None:  # only tasks with a larger jediTaskID
        payload["min_task_id"] = 0 if min_task_id == 0 else check_id(min_task_id, "min_task_id")
    return Call(api.TASK_MODIFIED_SINCE, payload, _modified_since)


def get_job_status(job_ids: Iterable[int]) -> Call:
    return Call(api.JOB_DESCRIPTION, {"job_ids": check_ids(job_ids)}, _typed(list, "job descriptions"))


def get_full_job_status(job_ids: Iterable[int]) -> Call:
    payload = {"job_ids": check_ids(job_ids)}
    return Call(api.JOB_DESCRIPTION_ARCHIVE, payload, _typed(list, "job descriptions"))


def kill_jobs(job_ids: Iterable[int]) -> Call:
    return Call(api.JOB_KILL, {"job_ids": check_ids(job_ids)}, _typed(list, "kill answers"))


def get_user_job_metadata(task_id: int) -> Call:
    return Call(api.JOB_METADATA, {"task_id": check_id(task_id)}, _typed(dict, "job metadata"))


def send_command_to_job(job_id: int, command: str) -> Call:
    check_id(job_id, "job_id")
    if not isinstance(command, str) or not command.strip():
        raise PandaInputError("command must be a non-empty string")
    if len(command) > api.MAX_PILOT_COMMAND_LENGTH:
        raise PandaInputError(
            f"command is {len(command)} characters; the pilot takes at most {api.MAX_PILOT_COMMAND_LENGTH}"
        )
    return Call(api.JOB_SET_COMMAND, {"job_id": job_id, "command": command}, _message)


def send_file_recovery_request(task_id: int, dry_run: bool = False) -> Call:
    payload = {"task_id": check_id(task_id), "dry_run": check_bool(dry_run, "dry_run")}
    return Call(api.FILE_RECOVERY, payload, _recovery)


def validate_cache_file(file_size: int, checksum: int) -> Call:
    return Call(api.FILE_VALIDATE, {"file_size": file_size, "checksum": checksum}, lambda env: env)


def upload_cache_file(file_name: str, content: bytes, use_cache_server: bool = False) -> Call:
    files = {"file": (file_name, content, "application/octet-stream")}
    return Call(api.FILE_UPLOAD, {}, _message, files=files, cache=use_cache_server)

