"""The task builder in a DAG: an analysis over a dataset with a sandbox directory, and events generated
with ``@task.panda`` in a container.

``analyse`` is what ``prun --exec "python ana.py --in %IN --out hist.root" --inDS ... --outDS ...
--outputs hist.root --nFilesPerJob 5 --memory 4000 --maxWalltime 6`` submits from a working directory
holding ``ana.py``. ``generate`` returns its task from a function; PanDA retries a failed attempt twice.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from airflow.sdk import DAG, task

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

POLL = float(os.environ.get("PANDA_EXAMPLE_POLL", "60"))
#: The output container is the task's name: unique per run. `run_after` is set for every run (scheduled,
#: manual, asset-triggered, API); `ts_nodash` is not.
RUN = "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}"

with DAG(
    dag_id="panda_prun_analysis",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"nickname": "alice"},
):
    analyse = SubmitTaskOperator(
        task_id="analyse",
        panda_task=PrunTask(
            exec="python ana.py --in %IN --out hist.root",
            in_ds="data18_13TeV:data18_13TeV.00348885.physics_Main.deriv.DAOD_PHYS.r13286_p4910",
            out_ds="user.{{ params.nickname }}.ana." + RUN,
            outputs=["hist.root"],
            n_files_per_job=5,
            memory=4000,
            walltime_hours=6,
            # packed and uploaded at run time; an unchanged directory reuses the copy the server holds
            sandbox=str(Path(__file__).parent / "analysis"),
        ),
        deferrable=True,
        poll_interval=POLL,
    )

    @task.panda(deferrable=True, poll_interval=POLL, auto_retries=2)
    def generate(seed: int, params=None, dag_run=None) -> PrunTask:
        return PrunTask(
            exec=f"gen.sh --seed {seed} %RNDM:1",
            out_ds=f"user.{params['nickname']}.gen.{seed}.{dag_run.run_after:%Y%m%dT%H%M%S%f}",
            n_jobs=10,
            outputs=["evt.root"],
            container_image="docker://myorg/gen:1.2",
        )

    generate(seed=42)
