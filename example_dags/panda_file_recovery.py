"""Wait on a task; if it ends with lost files (``finished``: some jobs failed), ask PanDA to recover
them and wait again until the task is ``done``.

On the local server the tag ``lost`` makes the task end ``finished`` and the recovery bring it to
``done``. On a real server the recovery re-runs the jobs whose output files were lost.
"""

from __future__ import annotations

from datetime import datetime

from _common import HELLO_TASK as TASK
from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, task

from airflow_provider_panda.operators import FileRecoveryOperator, SubmitTaskOperator
from airflow_provider_panda.sensors import TaskStatusSensor

with DAG(
    dag_id="panda_file_recovery",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={**PARAMS, "tag": "lost"},
    tags=["panda", "example"],
    doc_md=__doc__,
):
    submit = SubmitTaskOperator(
        task_id="submit",
        panda_task=TASK,
        allow_partial=True,  # "finished" ends the wait; the branch below decides what to do
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    @task.branch
    def lost_files(jedi_task_id: int) -> str | None:
        """Recover only when the task finished with failed jobs."""
        from airflow_provider_panda.hooks.panda import PandaHook

        status = PandaHook().get_task_status(int(jedi_task_id))
        print(f"PanDA task {jedi_task_id} ended {status}")
        return "recover" if status == "finished" else None

    recover = FileRecoveryOperator(task_id="recover", jedi_task_id="{{ ti.xcom_pull(task_ids='submit') }}")
    wait_again = TaskStatusSensor(
        task_id="wait_again",
        jedi_task_id="{{ ti.xcom_pull(task_ids='submit') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
    )
    lost_files(submit.output) >> recover >> wait_again
