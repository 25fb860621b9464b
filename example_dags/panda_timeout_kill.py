"""Put a ceiling on how long a PanDA task may run: when the wait times out, kill the task (or
soft-finish it, so running jobs complete and the task ends with what they produced).

``kill_when_late`` kills the task after ``PANDA_EXAMPLE_TIMEOUT`` seconds (default 3600);
``finish_when_late`` soft-finishes it instead. Either way the Airflow task fails, saying what was
done. On the local server the tag ``slow`` makes tasks run until something stops them.
"""

from __future__ import annotations

import os
from datetime import datetime

from _common import HELLO_TASK as TASK
from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG

from airflow_provider_panda.operators import SubmitTaskOperator

TIMEOUT = float(os.environ.get("PANDA_EXAMPLE_TIMEOUT", "3600"))

with DAG(
    dag_id="panda_timeout_kill",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={**PARAMS, "tag": "slow"},
    tags=["panda", "example"],
    doc_md=__doc__,
):
    SubmitTaskOperator(
        task_id="kill_when_late",
        panda_task=TASK,
        timeout=TIMEOUT,
        on_timeout="kill",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    SubmitTaskOperator(
        task_id="finish_when_late",
        panda_task=TASK,
        timeout=TIMEOUT,
        on_timeout="finish",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
