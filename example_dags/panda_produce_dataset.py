"""Data-aware pipelines, the producer: a PanDA task whose output dataset is announced as an Airflow asset.

``produce`` runs a PrunTask with one output (``hist.root``). When the task is ``done`` the operator reads
its output datasets from PanDA (XCom ``output_datasets``) and, through its ``AssetAlias`` outlet, emits an
asset event for each output container: ``rucio://<scope>/<container>`` with the jediTaskID, the file
counts and the monitor URL in the event's extra. ``panda_consume_dataset`` is scheduled on that alias and
runs on the produced dataset.
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, AssetAlias

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

#: The alias both DAGs name: the producer's events go through it, the consumer is scheduled on it.
PRODUCED_HISTOGRAMS = AssetAlias("panda-example-histograms")

with DAG(
    dag_id="panda_produce_dataset",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["panda", "example", "assets"],
    doc_md=__doc__,
):
    SubmitTaskOperator(
        task_id="produce",
        panda_task=PrunTask(
            exec="python make_hist.py --seed %RNDM:1 --out hist.root",
            out_ds="user.{{ params.user }}.airflow.produce.{{ params.tag }}."
                   "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}",
            outputs=["hist.root"],
            n_jobs=3,
            site="{{ params.site }}",
            vo="{{ params.vo }}",
            max_attempt=1,
        ),
        outlets=[PRODUCED_HISTOGRAMS],
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
