"""A data-aware pipeline under the real Airflow components (api-server, scheduler, dag-processor,
triggerer): the producer's asset event queues the consumer DAG, whose PanDA task reads the produced
dataset. Waits are for conditions, never a fixed time."""

from __future__ import annotations

import json

import pytest
from test_real_airflow import EXAMPLES, Cluster, query, wait_until

#: A real cluster on a busy machine can take minutes; load must only slow it, never fail it.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]


def test_consumer_dag_runs_on_the_producers_asset(tmp_path):
    from airflow_provider_panda.testing.server import LocalPandaServer

    # Seconds per status, as in test_real_airflow: a trigger firing at once races the LocalExecutor.
    with LocalPandaServer(step=2.0) as server:
        cluster = Cluster(tmp_path, EXAMPLES, server, {"PANDA_EXAMPLE_POLL": "1"})
        try:
            cluster.wait_for_dag("panda_produce_dataset")
            cluster.wait_for_dag("panda_consume_dataset")
            cluster.trigger("panda_produce_dataset", {"tag": "pipeline"})

            def consumer_ended():
                rows = query(cluster.db, "SELECT state, run_type FROM dag_run WHERE dag_id='panda_consume_dataset'")
                return [r for r in rows if r[0] in ("success", "failed")]

            [(state, run_type)] = wait_until(consumer_ended, 600, "the consumer's run to end", cluster.procs)
            assert (state, run_type) == ("success", "asset_triggered"), cluster.ti_log("panda_consume_dataset",
                                                                                       "analyse")[-3000:]
            [(producer_state,)] = query(cluster.db, "SELECT state FROM dag_run WHERE dag_id='panda_produce_dataset'")
            assert producer_state == "success"
            [(raw,)] = query(cluster.db, "SELECT value FROM xcom WHERE dag_id='panda_produce_dataset' "
                                         "AND task_id='produce' AND key='output_datasets'")
            produced = next(o for o in json.loads(raw) if o["type"] == "output")
            # The event that queued the consumer is the producer's, with its extra.
            [(extra,)] = query(cluster.db, "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                                           "WHERE a.uri = ?", produced["uri"])
            assert json.loads(extra)["jediTaskID"] == produced["jediTaskID"]
            [consumer] = [t for t in server.sim.tasks.values() if ".airflow.consume." in t.name]
            assert consumer.params["dsForIN"] == produced["did"] and consumer.status == "done"
            [listing] = server.sim.datasets_and_files(consumer.task_id, ["input"])
            assert len(listing["files"]) == produced["n_files"] == 3
        finally:
            cluster.stop()
