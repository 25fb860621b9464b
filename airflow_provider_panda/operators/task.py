"""Deprecated module path: import the operators from :mod:`airflow_provider_panda.operators`."""

import warnings

from airflow_provider_panda.calls import as_task_id
from airflow_provider_panda.operators import (
    FileRecoveryOperator,
    FinishTaskOperator,
    KillTaskOperator,
    RetryTaskOperator,
    SubmitTaskOperator,
)

warnings.warn("airflow_provider_panda.operators.task is deprecated: import from airflow_provider_panda.operators",
              DeprecationWarning, stacklevel=2)

__all__ = ["FileRecoveryOperator", "FinishTaskOperator", "KillTaskOperator", "RetryTaskOperator",
           "SubmitTaskOperator", "as_task_id"]
