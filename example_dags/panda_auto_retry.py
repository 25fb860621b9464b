"""Two ways to retry PanDA tasks automatically.

1. ``submit_with_auto_retries``: the operator asks PanDA to retry a failed task (up to 3 times,
   with more memory) before it gives up. On the local server the tag ``flaky`` makes a task fail
   once and then succeed, and ``failing`` makes every attempt fail.
2. ``submit`` >> ``wait`` >> ``retry_on_failure``: a sensor that fails fast on a failure status,
   and a RetryTaskOperator that runs only when the sensor failed (trigger rule ``one_failed``)
   and waits for the retried task. The run succeeds if the retry brings the task to ``done``.
"""

from __future__ import annotations

from datetime import datetime

from _common import HELLO_TASK as TASK
from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG

from airflow_provider_panda.operators import RetryTaskOperator, SubmitTaskOperator
from airflow_provider_panda.sensors import TaskStatusSensor

with DAG(
    dag_id="panda_auto_retry",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={**PARAMS, "tag": "flaky"},
    tags=["panda", "example"],
    doc_md=__doc__,
):
    SubmitTaskOperator(
        task_id="submit_with_auto_retries",
        panda_task=TASK,
        auto_retries=3,
        retry_new_params={"ramCount": 4000},
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    submit = SubmitTaskOperator(task_id="submit", panda_task=TASK, wait_for_completion=False)
    wait = TaskStatusSensor(
        task_id="wait",
        jedi_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
    )
    retry_on_failure = RetryTaskOperator(
        task_id="retry_on_failure",
        jedi_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        trigger_rule="one_failed",
    )
    submit >> wait >> retry_on_failure
