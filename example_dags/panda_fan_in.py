"""Fan in: the outputs of a mapped PanDA task, every map index, as one task's input.

``generate`` is mapped over three seeds (``@task.panda`` and ``.expand(seed=...)``): three PanDA tasks,
each with its own output container. ``merge`` reads them all as its ``in_ds`` through
``{{ ti | panda_outputs('generate') }}``: the output containers (not the logs) of every map index, in
map-index order, each once, comma-separated as prun's ``--inDS`` takes them. Nothing is registered: the
filter is in every PanDA operator's templates.
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG, task

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

SEEDS = [11, 12, 13]
#: Task names (and output containers): unique per run; each task adds its own last part.
NAME = ("user.{{ params.user }}.airflow.fan_in.{{ params.tag }}."
        "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}")

with DAG(
    dag_id="panda_fan_in",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["panda", "example", "assets"],
    doc_md=__doc__,
):

    @task.panda(deferrable=True, poll_interval=POLL_INTERVAL)
    def generate(seed: int) -> PrunTask:
        """One generation task per seed; the seed in its name makes each map index's task its own."""
        return PrunTask(exec=f"gen.sh --seed {seed} %RNDM:1", out_ds=f"{NAME}.s{seed}", outputs=["evt.root"],
                        n_jobs=2, site="{{ params.site }}", vo="{{ params.vo }}", max_attempt=1)

    merge = SubmitTaskOperator(
        task_id="merge",
        panda_task=PrunTask(exec="merge.sh %IN", in_ds="{{ ti | panda_outputs('generate') }}", out_ds=f"{NAME}.merged",
                      outputs=["merged.root"], n_files_per_job=10, site="{{ params.site }}", vo="{{ params.vo }}",
                      max_attempt=1),
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )

    generate.expand(seed=SEEDS) >> merge
