"""The XCom keys the provider's operators and sensor push, in one place.

``return_value`` is the jediTaskID (``FileRecoveryOperator``: the recovery log's URL).
"""

from __future__ import annotations

#: The jediTaskID, pushed as soon as the task is known (before any wait).
JEDI_TASK_ID = "jedi_task_id"
#: The task's page in the PanDA monitor (what the "PanDA monitor" link opens).
MONITOR_URL = "panda_monitor_url"
#: After a successful wait: the output and log datasets with their file counts (assets.py).
OUTPUT_DATASETS = "output_datasets"
#: A command's mark: what the task said before a retry, recovery, kill, finish or re-execution (marks.py).
COMMAND_MARK = "panda_command"

__all__ = ["COMMAND_MARK", "JEDI_TASK_ID", "MONITOR_URL", "OUTPUT_DATASETS"]
