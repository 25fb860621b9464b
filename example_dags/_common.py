"""Settings shared by the example DAGs: read from the environment at parse time (cheap, no network).

PANDA_EXAMPLE_USER   your PanDA nickname, used in task names (default: alice)
PANDA_EXAMPLE_SITE   the PanDA queue to run on (default: TEST_SITE, the local server's)
PANDA_EXAMPLE_VO     the task's VO (default: atlas)
PANDA_EXAMPLE_POLL   seconds between status reads (default: 30; the demo uses 1)
"""

from __future__ import annotations

import os

from airflow_provider_panda.builder import PrunTask

POLL_INTERVAL = float(os.environ.get("PANDA_EXAMPLE_POLL", "30"))
PARAMS = {
    "user": os.environ.get("PANDA_EXAMPLE_USER", "alice"),
    "site": os.environ.get("PANDA_EXAMPLE_SITE", "TEST_SITE"),
    "vo": os.environ.get("PANDA_EXAMPLE_VO", "atlas"),
    # A word in the task name. On the local PanDA server the tags flaky, failing, broken, lost and
    # slow choose how the task ends; on a real server it is just part of the name.
    "tag": "demo",
}

#: The task the examples submit, described as ``prun --exec "echo hello from Airflow" --outDS ...
#: --nEvents 10 --nEventsPerJob 5`` would. Its fields are templates, rendered per task instance.
HELLO_TASK = PrunTask(
    exec="echo hello from Airflow",
    # The output dataset is also the task's name: unique per run and task, and the tag reaches it.
    out_ds="user.{{ params.user }}.airflow.{{ dag.dag_id }}.{{ ti.task_id }}.{{ params.tag }}."
           "{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}",
    n_events=10,
    n_events_per_job=5,
    site="{{ params.site }}",
    vo="{{ params.vo }}",
    memory=2000,
    max_attempt=1,
)
