"""A retry policy of your own, in a DAG: one retry with more memory, whatever the cause, then stop."""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

# --8<-- [start:policy]
from airflow_provider_panda.retry_policy import RETRY, STOP, Decision


def once_with_more_memory(diagnosis, retries_so_far):
    """``diagnosis``: the category, the evidence, the current ramCount, the failing sites..."""
    if retries_so_far or diagnosis.category == "user_code":
        return Decision(STOP, f"{diagnosis.evidence}; not retried")
    ram = (diagnosis.ram_count or 2000) * 2
    return Decision(RETRY, f"{diagnosis.evidence}; one retry with ramCount {ram}", {"ramCount": ram})
# --8<-- [end:policy]


with DAG(dag_id="panda_own_retry_policy", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SubmitTaskOperator(
        task_id="simulate",
        panda_task=PrunTask(exec="sim.sh %RNDM:1", n_jobs=2, memory=2000,
                            out_ds="user.alice.sim.{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}"),
        auto_retry_policy=once_with_more_memory,
        poll_interval=float(os.environ.get("PANDA_EXAMPLE_POLL", "60")),
    )
