"""Many deferred PanDA waits in one DAG run, for the deployment tier (``make deploy-up``).

Trigger it with a conf (all optional):
```{"n": 300, "tag": "slow", "fail_every": 10, "defer_ids": [...], "poke_ids": [...], "kill_ids": [...]}``;
every wait reads its status each ``DEPLOY_POLL_INTERVAL`` seconds (5; the environment at parse time).

- ``submit``: ``n`` mapped deferred SubmitTaskOperator instances, one PanDA task each, named
  ``user.alice.deploy.<tag>.<run>.<map index>``; every ``fail_every``-th one is named ``.failing.``
  (the local server fails it). With ``tag`` ``slow`` the local server keeps them running until told.
- ``sense_deferred`` / ``sense_poke``: TaskStatusSensor on existing PanDA tasks, in the triggerer
  and in a worker slot (poke mode).
- ``kill``: KillTaskOperator on existing PanDA tasks, waiting in the triggerer for the kill to land.

Parse-time cheap: the lists are made at run time by ``plan`` and ``given`` (small Python tasks).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_panda.operators import KillTaskOperator, SubmitTaskOperator
from airflow_provider_panda.sensors import TaskStatusSensor

#: Seconds between status reads of every wait (the tier's environment may set it: read at parse time).
POLL = float(os.environ.get("DEPLOY_POLL_INTERVAL", "5"))

with DAG("panda_deploy_scale", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         max_active_tasks=1024, max_active_runs=4,
         default_args={"retries": 1, "retry_delay": timedelta(seconds=2)}) as dag:

    @task
    def plan(dag_run=None) -> list[dict]:
        conf = dag_run.conf or {}
        n, tag, every = int(conf.get("n", 20)), str(conf.get("tag", "demo")), int(conf.get("fail_every", 10))
        run = "".join(c if c.isalnum() else "_" for c in dag_run.run_id)[-40:]

        def params(i: int) -> dict:
            # a slow task runs until told; the others end by their name (.failing. fails)
            kind = "failing" if tag != "slow" and every and i % every == every - 1 else "ok"
            return {"taskName": f"user.alice.deploy.{tag}.{kind}.{run}.{i}", "vo": "atlas", "prodSourceLabel": "user",
                    "taskType": "anal", "noInput": True, "nEvents": 1, "nEventsPerJob": 1,
                    "jobParameters": [{"type": "constant", "value": "echo hi"}],
                    "log": {"type": "template", "param_type": "log", "value": "user.alice.log.${SN}.tgz"}}

        return [params(i) for i in range(n)]

    @task
    def given(key: str, dag_run=None) -> list[int]:
        return [int(i) for i in (dag_run.conf or {}).get(key, [])]

    SubmitTaskOperator.partial(task_id="submit", deferrable=True, poll_interval=POLL).expand(task_params=plan())
    TaskStatusSensor.partial(task_id="sense_deferred", deferrable=True, poll_interval=POLL).expand(
        jedi_task_id=given.override(task_id="defer_ids")("defer_ids"))
    TaskStatusSensor.partial(task_id="sense_poke", mode="poke", deferrable=False, poll_interval=POLL).expand(
        jedi_task_id=given.override(task_id="poke_ids")("poke_ids"))
    KillTaskOperator.partial(task_id="kill", deferrable=True, poll_interval=POLL).expand(
        jedi_task_id=given.override(task_id="kill_ids")("kill_ids"))
