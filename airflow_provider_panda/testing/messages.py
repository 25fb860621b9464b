"""What panda-server writes, for the local server: its messages, the envelope and datetimes.

The runtime reads answers (``api``); only a server writes them, so this lives with the local server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow_provider_panda.api import INCREMENTAL_PREFIX

# Messages the client does not interpret (it reads the code, or "not found" in any text); the
# ones it does read are in :mod:`airflow_provider_panda.api`.
MESSAGE_SSL = "SSL secure connection is required"
MESSAGE_TASK_NOT_FOUND = "Task not found"
MESSAGE_NO_METADATA = "No metadata found"
MESSAGE_NO_DETAILS = "Task not found or error retrieving the details"
MESSAGE_RECOVERY_ACCEPTED = "The request was accepted and will be processed in a few minutes"
#: The start of the 403 text for a refused token (the reason follows).
MESSAGE_TOKEN_FAILED = "Token authentication failed."


def command_registered_message(command: str, task_id: int) -> str:
    return f"command={command} is registered for task ID {task_id}. will be executed in a few minutes"


def command_rejected_message(command: str, status: str, extra: str = "") -> str:
    return f"Command rejected: the {command} command is not accepted if the task is in {status} status {extra}"


def command_not_found_message(task_id: int) -> str:
    return f"jediTaskID={task_id} not found"


def submit_new_message(task_id: int) -> str:
    return f"succeeded. new jediTaskID={task_id}"


def submit_duplicate_message(task_id: int, status: str, task_name: str) -> str:
    return (
        f"jediTaskID={task_id} is in the {status} state for outDS={task_name}. "
        "You can re-submit the task with new parameters for the same or another input "
        "once it goes into finished/failed/done. "
        "Or you can retry the task once it goes into running/finished/failed/done. "
        "Note that retry != resubmission according to "
        "https://twiki.cern.ch/twiki/bin/view/PanDA/PandaJEDI#Task_retry_and_resubmission "
    )


def submit_incremental_message(task_id: int, status: str) -> str:
    return (
        f"{INCREMENTAL_PREFIX} "
        f"jediTaskID={task_id} (currently in {status} state) will be re-executed with old and/or new input"
    )


def retry_active_message(status: str) -> str:
    return f"retry has been triggered for failed jobs while the task is still {status}"


def envelope(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    """The JSON body of every handled call."""
    return {"success": success, "message": message, "data": data}


def encode_special(obj: Any) -> Any:
    """``json.dumps`` default: datetimes as ``{"__datetime__": iso}``, as the server writes them."""
    if isinstance(obj, datetime):
        return {"__datetime__": obj.isoformat()}
    raise TypeError(f"Type not serializable: {type(obj).__name__}")
