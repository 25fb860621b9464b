"""The pipeline examples run to their documented end under the real scheduler, dag-processor,
triggerer and api-server (LocalExecutor), against the local PanDA server at an ordinary pace (tasks
end in about a second: the trigger's event hold keeps Airflow's early-trigger race away, see
test_early_trigger.py). Every wait here is for a condition, never a fixed time."""

from __future__ import annotations

import pytest
from test_real_airflow import EXAMPLES, Cluster, query, wait_until

#: A real cluster on a busy machine can take minutes; load must only slow it, never fail it.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(1200)]


#: DAG id -> (run conf, the states every task instance must end in).
PIPELINES = {
    "panda_file_recovery": ({"tag": "lost"}, {"submit": "success", "lost_files": "success", "recover": "success",
                                              "wait_again": "success"}),
    "panda_auto_retry": ({"tag": "flaky"}, {"submit_with_auto_retries": "success", "submit": "success",
                                            "wait": "failed", "retry_on_failure": "success"}),
    "panda_chain_through_xcom": ({}, None),
    "panda_fan_in": ({}, None),
}


@pytest.fixture
def cluster(tmp_path):
    from airflow_provider_panda.testing.server import LocalPandaServer

    with LocalPandaServer(step=0.2) as server:
        cluster = Cluster(tmp_path, EXAMPLES, server, extra_env={"PANDA_EXAMPLE_POLL": "0.5"})
        try:
            yield cluster, server
        finally:
            cluster.stop()


def why_failed(cluster: Cluster, dag_id: str, states: dict[str, str]) -> str:
    """What the scheduler said of a run that failed, and the end of each failed instance's log."""
    logs = "\n".join(f"--- {task} ({state}):\n{cluster.ti_log(dag_id, task.split('[')[0])[-3000:]}"
                     for task, state in states.items() if state == "failed")
    return f"{dag_id}: {states}\n{cluster.scheduler_says(dag_id)}\n{logs}"


def test_pipeline_examples_under_the_scheduler_and_triggerer(cluster):
    cluster, server = cluster
    for dag_id in PIPELINES:
        cluster.wait_for_dag(dag_id)
    for dag_id, (conf, _) in PIPELINES.items():
        cluster.trigger(dag_id, conf)

    def ended() -> bool:
        rows = query(cluster.db, "SELECT dag_id, state FROM dag_run")
        return len([1 for _, state in rows if state in ("success", "failed")]) == len(PIPELINES)

    def states(dag_id: str) -> dict[str, str]:
        rows = query(cluster.db, "SELECT task_id, map_index, state FROM task_instance WHERE dag_id=?", dag_id)
        return {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in rows}

    wait_until(ended, 900, "every pipeline run to end", cluster.procs,
               lambda: {d: states(d) for d in PIPELINES})
    runs = dict(query(cluster.db, "SELECT dag_id, state FROM dag_run"))
    for dag_id, (_, expected) in PIPELINES.items():
        got = states(dag_id)
        assert runs[dag_id] == "success", why_failed(cluster, dag_id, got)
        if expected is not None:
            assert got == expected, (dag_id, got)
        else:
            assert set(got.values()) == {"success"}, (dag_id, got)
    recovered = [t for t in server.sim.tasks.values() if "panda_file_recovery.submit.lost." in t.name]
    assert [(t.recoveries, t.status) for t in recovered] == [(1, "done")]
    # the automatic retry says why the first attempt failed, in the log of the resumed (worker) try
    text = cluster.ti_log("panda_auto_retry", "submit_with_auto_retries")
    assert "attempt 0 ended failed:" in text and "automatic retry 1 of 3 with {'ramCount': 4000}" in text, text[-3000:]
