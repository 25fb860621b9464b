"""What a command leaves for the waits after it, anywhere downstream in the DAG run.

PanDA only queues a command (retry, file recovery, kill, finish, re-execution): JEDI acts later, so
a wait started right after it reads the task's old status first (``finished`` after a recovery
request, ``failed`` after a retry). The operator that sent the command pushes the XCom
``panda_command``: the jediTaskID and the task's :class:`~airflow_provider_panda.waiting.StaleMark`
(its status, attempt, last state change and error dialog before the command, and when the command
was sent). Every PanDA wait (the operators' waits, the sensor in every mode, the trigger) looks for
these marks on the PanDA operators upstream of it, and for the tasks named in ``after_command``,
and does not end on the status the task had before the newest command.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_provider_panda import xcom
from airflow_provider_panda.exceptions import PandaError, PandaInputError
from airflow_provider_panda.waiting import StaleMark

if TYPE_CHECKING:
    from airflow.sdk import Context



def mark_before(hook: Any, task_id: int, status: str, command: str, log: Any) -> StaleMark:
    """What the task says just before ``command``, so the waits after it can tell old from new."""
    try:
        return StaleMark.of(status, hook.get_task_info(task_id), command)
    except PandaError as exc:
        log.warning("Could not read PanDA task %s's details (%s): the waits after the %s rely on seeing the "
                    "status change", task_id, exc, command)
        return StaleMark.of(status, None, command)


def publish(context: Context, task_id: int, mark: StaleMark) -> None:
    """Push the mark for the waits downstream (the newest command of this task instance wins)."""
    context["ti"].xcom_push(key=xcom.COMMAND_MARK, value={"jedi_task_id": task_id, **mark.to_dict()})


def check_after_command(value: Any) -> tuple[str, ...] | dict[str, Any]:
    """``after_command``: Airflow task ids (a str or a list of them), or a mark as pushed in XCom."""
    if value is None:
        return ()
    if isinstance(value, dict):
        if not isinstance(value.get("status"), str):
            raise PandaInputError(f"after_command as a dict must be a {xcom.COMMAND_MARK!r} XCom (with a 'status'), "
                                  f"got {value!r:.80}")
        return value
    ids = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Iterable) else value
    if not isinstance(ids, tuple) or not all(isinstance(i, str) and i for i in ids):
        raise PandaInputError(f"after_command must be the task_id of the Airflow task that sent the command "
                              f"(or a list of them), got {value!r:.80}")
    return ids


def _command_ancestors(task: Any) -> list[str]:
    """The task ids of the PanDA operators upstream of ``task`` (those that push marks say so with
    the class attribute ``pushes_command_marks``; a mapped one through its ``operator_class``)."""
    seen: set[str] = set()
    found: list[str] = []
    todo = list(getattr(task, "upstream_list", ()) or ())
    while todo:
        node = todo.pop()
        if node.task_id in seen:
            continue
        seen.add(node.task_id)
        cls = getattr(node, "operator_class", None) or type(node)
        if getattr(cls, "pushes_command_marks", False):
            found.append(node.task_id)
        todo.extend(getattr(node, "upstream_list", ()) or ())
    return sorted(found)


def _values(pulled: Any) -> list[dict[str, Any]]:
    """An XCom pull as a flat list of marks (a mapped upstream gives one per map index)."""
    if isinstance(pulled, dict):
        return [pulled]
    if isinstance(pulled, (list, tuple)):
        return [v for item in pulled for v in _values(item)]
    return []


def upstream_mark(task: Any, context: Context, task_id: int, after_command: Any = ()) -> StaleMark | None:
    """The newest mark a command left on PanDA task ``task_id`` for this wait: from the PanDA
    operators upstream of ``task`` in this DAG run, and from ``after_command``."""
    marks: list[dict[str, Any]] = []
    if isinstance(after_command, dict):
        marks.append(after_command)
        after_command = ()
    ids = sorted(set(_command_ancestors(task)) | set(after_command or ()))
    ti = context["ti"]
    for upstream in ids:
        marks.extend(_values(ti.xcom_pull(task_ids=upstream, key=xcom.COMMAND_MARK)))
    mine = [m for m in marks if str(m.get("jedi_task_id", task_id)) == str(task_id) and isinstance(m.get("status"),
                                                                                                     str)]
    return StaleMark.newest(*(StaleMark.load(m) for m in mine))
