"""Chain two PanDA tasks inside one DAG: the second reads what the first produced.

``generate`` makes events (output ``evt.root``); when it is ``done`` its XCom ``output_datasets`` lists
the output and log datasets with their file counts. ``analyse`` takes the output containers
(``did``: ``scope:container``) as its ``in_ds`` through a template (the ``panda_outputs`` filter), and
runs one job per file. Nothing is registered: the filter is in every PanDA operator's templates.
"""

from __future__ import annotations

from datetime import datetime

from _common import PARAMS, POLL_INTERVAL
from airflow.sdk import DAG

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.operators import SubmitTaskOperator

NAME = ("user.{{ params.user }}.airflow.chain.{{ ti.task_id }}.{{ params.tag }}."
        "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}")
#: The output datasets (not the log) of ``generate``, comma-separated, as ``in_ds`` takes them (the
#: ``panda_outputs`` filter reads its XCom ``output_datasets``).
GENERATED = "{{ ti | panda_outputs('generate') }}"

with DAG(
    dag_id="panda_chain_through_xcom",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params=PARAMS,
    tags=["panda", "example", "assets"],
    doc_md=__doc__,
):
    generate = SubmitTaskOperator(
        task_id="generate",
        panda_task=PrunTask(exec="gen.sh --seed %RNDM:1", out_ds=NAME, outputs=["evt.root"], n_jobs=2,
                      site="{{ params.site }}", vo="{{ params.vo }}", max_attempt=1),
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    analyse = SubmitTaskOperator(
        task_id="analyse",
        panda_task=PrunTask(exec="ana.sh %IN", in_ds=GENERATED, out_ds=NAME, outputs=["hist.root"], n_files_per_job=1,
                      site="{{ params.site }}", vo="{{ params.vo }}", max_attempt=1),
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
    generate >> analyse
