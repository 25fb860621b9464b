"""Data-aware pipelines, the consumer: runs when ``panda_produce_dataset`` produced a dataset, on that dataset.

The DAG is scheduled on the producer's ``AssetAlias``: each asset event the producer emits (one per output
container) queues a run. ``pick`` reads the run's ``triggering_asset_events`` and returns the dataset as
``scope:container``; ``analyse`` submits a PrunTask with it as ``in_ds``. Triggered by hand (no asset
event), ``pick`` takes ``params.in_ds`` instead.
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, AssetAlias, Param, task

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

with DAG(
    dag_id="panda_consume_dataset",
    schedule=AssetAlias("panda-example-histograms"),  # the alias panda_produce_dataset emits through
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={**PARAMS, "in_ds": Param("", type="string", description="input dataset when triggered by hand")},
    tags=["panda", "example", "assets"],
    doc_md=__doc__,
):

    @task
    def pick(triggering_asset_events=None, params=None) -> str:
        """The produced dataset (``scope:container``) this run is for."""
        from airflow_provider_panda.assets import datasets_from_events

        found = datasets_from_events(triggering_asset_events)
        if not found and not params["in_ds"]:
            raise ValueError("no rucio:// asset event triggered this run and params.in_ds is empty")
        print(f"input dataset(s): {found or params['in_ds']}")
        return ",".join(found) or params["in_ds"]

    analyse = SubmitTaskOperator(
        task_id="analyse",
        panda_task=PrunTask(
            exec="python analyse.py --in %IN --out summary.txt",
            in_ds="{{ ti.xcom_pull(task_ids='pick') }}",
            out_ds="user.{{ params.user }}.airflow.consume.{{ params.tag }}."
                   "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}",
            outputs=["summary.txt"],
            n_files_per_job=1,
            site="{{ params.site }}",
            vo="{{ params.vo }}",
            max_attempt=1,
        ),
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    pick() >> analyse
