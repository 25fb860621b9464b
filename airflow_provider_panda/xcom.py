"""The XCom keys the provider's operators and sensor push, in one place.

``return_value`` is the jediTaskID (``FileRecoveryOperator``: the recovery log's URL).
"""

from __future__ import annotations

from typing import Any

#: The jediTaskID, pushed as soon as the task is known (before any wait).
JEDI_TASK_ID = "jedi_task_id"
#: The task's page in the PanDA monitor (what the "PanDA monitor" link opens).
MONITOR_URL = "panda_monitor_url"
#: After a successful wait: the output and log datasets with their file counts (assets.py).
OUTPUT_DATASETS = "output_datasets"
#: The automatic retries' record: each failed attempt, why it failed, what was decided and sent.
ATTEMPTS = "panda_attempts"
#: A command's mark: what the task said before a retry, recovery, kill, finish or re-execution (marks.py).
COMMAND_MARK = "panda_command"

__all__ = ["ATTEMPTS", "COMMAND_MARK", "JEDI_TASK_ID", "MONITOR_URL", "OUTPUT_DATASETS", "push_task"]


def push_task(ti: Any, task_id: int, monitor_url: str) -> None:
    """Make the task known at once (before any wait): its id, and its monitor page for the link."""
    ti.xcom_push(key=JEDI_TASK_ID, value=task_id)
    ti.xcom_push(key=MONITOR_URL, value=monitor_url)
