"""Submit a PanDA task described the way prun describes it, wait for it (deferrable), then read its
jobs' metadata.

The main example: ``TASK`` is a :class:`~airflow_provider_panda.builder.PrunTask` (what ``prun --exec ...
--outDS ... --nEvents 10 --nEventsPerJob 5`` would submit); ``submit`` renders it (task name unique per
run), submits it and waits in the triggerer until the task is ``done``; its XCom is the jediTaskID and
its "PanDA monitor" link opens the task in the monitor. ``summarise`` reads the job metadata
(``get_user_job_metadata``). Trigger with ``{"tag": "failing"}`` on the local server to see a failure.
``panda_fan_out`` shows the other way: raw task parameters.
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, task

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

TASK = PrunTask(
    exec="echo hello from Airflow",
    # The output dataset is also the task's name: unique per run, and the tag reaches it.
    out_ds="user.{{ params.user }}.airflow.{{ dag.dag_id }}.{{ ti.task_id }}.{{ params.tag }}."
           "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}",
    n_events=10,
    n_events_per_job=5,
    site="{{ params.site }}",
    vo="{{ params.vo }}",
    memory=2000,
    max_attempt=1,
)

with DAG(
    dag_id="panda_submit_and_wait",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["panda", "example"],
    doc_md=__doc__,
):
    submit = SubmitTaskOperator(
        task_id="submit",
        panda_task=TASK,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    @task
    def summarise(jedi_task_id: int) -> dict:
        """Count the finished jobs and the events they processed, from PanDA's job metadata."""
        from airflow_provider_panda.hooks.panda import PandaHook

        metadata = PandaHook().get_user_job_metadata(int(jedi_task_id))
        summary = {"jedi_task_id": int(jedi_task_id), "finished_jobs": len(metadata),
                   "events": sum(int(m.get("nEvents", 0)) for m in metadata.values() if isinstance(m, dict))}
        print(f"PanDA task {jedi_task_id}: {summary['finished_jobs']} finished jobs, {summary['events']} events")
        return summary

    summarise(submit.output)
