"""The PanDA operators: ``SubmitTaskOperator`` (submit.py) and the commands on a task (commands.py)."""

from airflow_provider_panda.operators.commands import (
    FileRecoveryOperator,
    FinishTaskOperator,
    KillTaskOperator,
    RetryTaskOperator,
)
from airflow_provider_panda.operators.submit import SubmitTaskOperator

__all__ = ["FileRecoveryOperator", "FinishTaskOperator", "KillTaskOperator", "RetryTaskOperator",
           "SubmitTaskOperator"]
