"""``panda_deploy_scale``'s submissions with per-task polling: the baseline of ``bench/deploy_scale.py``.

The same mapped deferred SubmitTaskOperator, except that each trigger reads its own task
(``shared_poller=False``: one ``task/get_status`` per wait per interval) instead of sharing the
triggerer's poller. No setting turns the poller off; the trigger's argument does, set here before
deferral. Conf: ``{"n": 100, "tag": "slow"}`` as for ``panda_deploy_scale``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_panda.operators import SubmitTaskOperator

POLL = float(os.environ.get("DEPLOY_POLL_INTERVAL", "5"))


class PerTaskPollingSubmit(SubmitTaskOperator):
    """SubmitTaskOperator whose deferred wait polls its own task."""

    def defer(self, *, trigger, **kwargs):
        trigger.shared_poller = False
        super().defer(trigger=trigger, **kwargs)


with DAG("panda_deploy_scale_per_task", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         max_active_tasks=1024, max_active_runs=4,
         default_args={"retries": 1, "retry_delay": timedelta(seconds=2)}) as dag:

    @task
    def plan(dag_run=None) -> list[dict]:
        conf = dag_run.conf or {}
        n, tag = int(conf.get("n", 20)), str(conf.get("tag", "demo"))
        run = "".join(c if c.isalnum() else "_" for c in dag_run.run_id)[-40:]
        return [{"taskName": f"user.alice.deploy.{tag}.ok.{run}.{i}", "vo": "atlas", "prodSourceLabel": "user",
                 "taskType": "anal", "noInput": True, "nEvents": 1, "nEventsPerJob": 1,
                 "jobParameters": [{"type": "constant", "value": "echo hi"}],
                 "log": {"type": "template", "param_type": "log", "value": "user.alice.log.${SN}.tgz"}}
                for i in range(n)]

    PerTaskPollingSubmit.partial(task_id="submit", deferrable=True, poll_interval=POLL).expand(task_params=plan())
