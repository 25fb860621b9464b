"""Whose PanDA task is it, and what does it need: the decisions of ``SubmitTaskOperator``, without I/O.

A task instance (dag_id, task_id, run_id, map_index) owns the PanDA tasks it submitted, and only
those. Its parameters carry the instance's key (:data:`OWNER_KEY`); a later try, a clear or a
lookup by taskName recognises "my task" by it. The operator reads the facts (the task state store,
the tasks of a name, a status) and asks the functions here what to do; it then does it (submit,
retry, re-execute, wait) and says so in the log. The table "What each Airflow action does to the
PanDA task" in docs/pipelines.md is these rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_panda import api
from airflow_provider_panda.arguments import MAX_AUTO_RETRIES
from airflow_provider_panda.waiting import FAILURE, StaleMark, WaitSpec

#: The task parameter naming the Airflow task instance that submitted a task (JEDI keeps keys it
#: does not know in the task's parameters, and ignores them).
OWNER_KEY = "airflowTaskInstance"
#: The task state store's key (Airflow >= 3.3): ``{"jedi_task_id": ..., "task_name": ...}``.
STATE_KEY = "panda_jedi_task_id"
STORED_ID, STORED_NAME = "jedi_task_id", "task_name"
#: Statuses on their way to a known end: an earlier try's task is judged once it got there.
SETTLING = frozenset({"toabort", "aborting", "tobroken"})

#: What to do with a task: wait on it, ask PanDA to retry it, re-execute it (incremental
#: execution), fail at once without Airflow retries (broken), or let the failure stand.
WAIT, RETRY, REEXECUTE, BROKEN, FAIL = "wait", "retry", "reexecute", "broken", "fail"
#: What to do when the taskName is held by a task this instance did not submit (``if_exists``).
ADOPT = "adopt"
IF_EXISTS = (FAIL, ADOPT, REEXECUTE)


def instance_key(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str:
    """``dag_id/task_id/run_id/map_index``: the owner of the PanDA tasks a task instance submits."""
    return f"{dag_id}/{task_id}/{run_id}/{-1 if map_index is None else map_index}"


def submitted_by(info: Mapping[str, Any], owner: str) -> bool:
    """Whether a task's details (``raw_task_params``) carry the owner key ``owner``."""
    return (info.get("raw_task_params") or {}).get(OWNER_KEY) == owner


def stored_entry(task_id: int, task_name: str) -> dict[str, Any]:
    """What the state store keeps: the task and the taskName it was submitted under."""
    return {STORED_ID: task_id, STORED_NAME: task_name}


def stored_task(entry: Any, task_name: str) -> tuple[int | None, str | None]:
    """The task an earlier try kept in the state store, if it was submitted under ``task_name``:
    ``(task_id, None)``, or ``(None, other_name)`` when a try under a new name must run a new task
    (a taskName with ``{{ ti.try_number }}``), or ``(None, None)`` when nothing was kept. The
    first release kept the id alone: such an entry is trusted as it is."""
    if isinstance(entry, (int, str)) and not isinstance(entry, bool) and str(entry).isdecimal():
        return int(entry), None
    if not isinstance(entry, Mapping) or not entry.get(STORED_ID):
        return None, None
    name = entry.get(STORED_NAME)
    if name is not None and name != task_name:
        return None, name
    return int(entry[STORED_ID]), None


def split_by_owner(tasks: Iterable[Mapping[str, Any]], owner: str) -> tuple[list[int], list[Mapping[str, Any]]]:
    """The ids of ``owner``'s tasks, and the other tasks (an answer of ``find_tasks_by_name``)."""
    tasks = list(tasks)
    mine = [int(t["jediTaskID"]) for t in tasks if submitted_by(t, owner)]
    return mine, [t for t in tasks if int(t["jediTaskID"]) not in mine]


def newest(tasks: Iterable[Mapping[str, Any]]) -> Mapping[str, Any]:
    return max(tasks, key=lambda t: int(t["jediTaskID"]))


def for_earlier_task(status: str | None, spec: WaitSpec) -> str:
    """What a task an earlier try submitted needs now: nothing (active, not visible yet, or
    succeeded: :data:`WAIT`), :data:`RETRY` (failed, finished, exhausted), :data:`REEXECUTE`
    (aborted: a user killed it, or that try's ``cancel_on_kill``) or :data:`BROKEN`."""
    if status == "broken":
        return BROKEN
    if status is None or spec.classify(status) != FAILURE:
        return WAIT
    if status == "aborted":
        return REEXECUTE
    if status in api.COMMAND_ALLOWED_FROM["retry"]:
        return RETRY
    return WAIT  # any other failing status: the wait reports it


def when_name_taken(if_exists: str, status: str | None) -> str:
    """A task this instance did not submit holds the name: :data:`ADOPT` it, :data:`REEXECUTE` it
    (only once it ended: PanDA refuses to re-run an active task) or :data:`FAIL` before anything changes."""
    if if_exists == ADOPT:
        return ADOPT
    if if_exists == REEXECUTE and status in api.RESUBMITTABLE_FROM:
        return REEXECUTE
    return FAIL


def name_taken_hint(if_exists: str) -> str:
    if if_exists == REEXECUTE:
        return "it is still active, so it cannot be re-executed yet"
    return ("make taskName unique per run and map index (e.g. include {{ run_id }} and {{ ti.map_index }}), "
            "or set if_exists='adopt' to wait on that task, or if_exists='reexecute' to re-run it on new input")


def after_failure(status: str | None, *, reattached: bool, retries_done: int, has_policy: bool) -> str:
    """A wait ended badly: re-execute a task aborted while this try waited on the earlier try's
    task (that try's ``cancel_on_kill`` racing this start), ask the retry policy (:data:`RETRY`:
    it decides whether and how), fail at once for a broken task, or let the failure stand (:data:`FAIL`)."""
    if status == "aborted" and reattached:
        return REEXECUTE
    if has_policy and retries_done < MAX_AUTO_RETRIES and status in api.COMMAND_ALLOWED_FROM["retry"]:
        return RETRY
    if status == "broken":
        return BROKEN
    return FAIL


def reexecution_params(params: Mapping[str, Any], new_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters a re-execution submits: the task's own, the retry parameters, and the
    duplicate check that makes PanDA re-run the task instead of making a second one."""
    return {**params, **(new_params or {}), "uniqueTaskName": True}


@dataclass(frozen=True)
class Attached:
    """The task a try waits on, what it said before a command this try sent it (if any), and
    whether it is an earlier try's task taken over as it was (no command sent)."""

    task_id: int
    stale: StaleMark | None = None
    reattached: bool = False
