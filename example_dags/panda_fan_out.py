"""Dynamic task mapping: submit dozens of PanDA tasks in one run and wait on all of them deferred.

``make_task_params`` builds one task description per item (here: a scan over a parameter), and
``SubmitTaskOperator.partial(...).expand(task_params=...)`` submits each and waits in the
triggerer, so no worker slot is held while PanDA works. Set ``n_tasks`` when triggering.

Each mapped instance owns one PanDA task: its ``taskName`` carries the run and the item's index
(the map index), so no two instances can share (or re-execute) one task. A name already held by
another task fails that instance before anything is submitted. (Values that come from an upstream
task, as here, are not rendered as templates: put the index in yourself. In a template file or a
literal ``expand`` list, ``{{ ti.map_index }}`` does it, as ``panda_task.json`` shows.)
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, task

from airflow_provider_panda.operators import SubmitTaskOperator

with DAG(
    dag_id="panda_fan_out",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={**PARAMS, "n_tasks": 24},
    max_active_tasks=64,
    tags=["panda", "example"],
    doc_md=__doc__,
):

    @task
    def make_task_params(params: dict | None = None, dag_run=None) -> list[dict]:
        """One no-input task per scan point, each with its own name, unique per run."""
        run = dag_run.run_after.strftime("%Y%m%dT%H%M%S%f")
        tasks = []
        for point in range(int(params["n_tasks"])):
            # item i becomes map index i: the index makes the name its own
            name = f"user.{params['user']}.airflow.fan_out.{params['tag']}.{run}.m{point:03d}"
            tasks.append({
                "taskName": name, "uniqueTaskName": True, "vo": params["vo"], "prodSourceLabel": "user",
                "taskType": "anal", "processingType": "panda-client-test", "transUses": "", "transHome": None,
                "transPath": "https://pandaserver.cern.ch/trf/user/runGen-00-00-02", "architecture": "",
                "coreCount": 1, "ramCount": 2000, "walltime": 600, "noInput": True, "nEvents": 5,
                "nEventsPerJob": 5, "site": params["site"], "cloud": "WORLD", "maxAttempt": 1,
                "jobParameters": [{"type": "constant", "value": f"echo scan point {point}"}],
                "log": {"type": "template", "param_type": "log", "dataset": f"{name}.log/",
                        "value": f"{name}.log.${{SN}}.tgz"},
            })
        return tasks

    SubmitTaskOperator.partial(
        task_id="submit",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    ).expand(task_params=make_task_params())
