"""A first PanDA DAG: submit one task, described as prun describes it, and wait for it in the triggerer.

The same file runs against the local PanDA server (``make local-server``) and against a real one: only
the connection ``panda_default`` changes. Give your PanDA nickname when you trigger it
(``-c '{"nickname": "<you>"}'``): user task names start with ``user.<nickname>.``.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

with DAG(
    dag_id="panda_first_dag",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"nickname": "alice"},
):
    SubmitTaskOperator(
        task_id="hello",
        # what `prun --exec "echo hello from Airflow" --outDS user.<you>.airflow.hello.<time> --nJobs 2` submits
        panda_task=PrunTask(
            exec="echo hello from Airflow",
            out_ds="user.{{ params.nickname }}.airflow.hello.{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}",
            n_jobs=2,
        ),
        deferrable=True,  # wait in the triggerer, holding no worker slot
        poll_interval=float(os.environ.get("PANDA_EXAMPLE_POLL", "60")),  # 1 s on the local server
    )
