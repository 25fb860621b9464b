"""The data-aware example DAGs under ``airflow dags test`` against the local server: the producer's
XCom and asset events, the consumer on the produced dataset, two tasks chained through XCom, and the
OpenLineage events of a run (the OpenLineage provider's file transport), and a mapped producer's
outputs fanned in to one task."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from test_example_dags import airflow_env, dags_test, panda_tasks  # noqa: F401 - fixtures reused


def asset_events(env, uri: str) -> list[dict]:
    db = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? "
                            "ORDER BY e.id", (uri,)).fetchall()
    return [json.loads(extra) if isinstance(extra, str) else extra for (extra,) in rows]


@pytest.fixture
def produced(dags_test, airflow_env, panda_server, tmp_path):  # noqa: F811
    """One run of panda_produce_dataset (with OpenLineage writing to a file): (run, lineage file)."""
    lineage = tmp_path / "openlineage.json"
    airflow_env["AIRFLOW__OPENLINEAGE__TRANSPORT"] = json.dumps(
        {"type": "file", "log_file_path": str(lineage), "append": True})
    try:
        run = dags_test("panda_produce_dataset", tag="produce")
    finally:
        del airflow_env["AIRFLOW__OPENLINEAGE__TRANSPORT"]
    return run, lineage


def test_producer_pushes_outputs_and_emits_asset_events(produced, airflow_env, panda_server):  # noqa: F811
    run, _ = produced
    assert run.states == {"produce": "success"}
    [task] = [t for t in panda_tasks(panda_server, ".airflow.produce.produce.") if t.task_id == run.xcom("produce")]
    outputs = {o["type"]: o for o in run.xcom("produce", "output_datasets")}
    hist = outputs["output"]
    assert hist["name"] == task.name[:-1] + "_hist.root/" and hist["n_files"] == 3 and hist["did"].startswith("user.")
    [extra] = asset_events(airflow_env, hist["uri"])
    assert extra["jediTaskID"] == task.task_id and extra["n_files"] == 3 and extra["partial"] is False
    assert extra["monitor_url"].endswith(f"/monitor/task/{task.task_id}/")


def test_producer_openlineage_events_show_the_datasets(produced, panda_server):
    run, lineage = produced
    events = [json.loads(line) for line in lineage.read_text().splitlines() if line.strip()]
    complete = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"].endswith(".produce")]
    assert complete, [e.get("eventType") for e in events]
    outputs = {(o["namespace"], o["name"]): o for o in complete[-1]["outputs"]}
    produced_here = {(f"rucio://{o['scope']}", o["name"].rstrip("/")) for o in run.xcom("produce", "output_datasets")}
    assert set(outputs) == produced_here and len(produced_here) == 2  # the output and the log container
    hist = next(o for o in run.xcom("produce", "output_datasets") if o["type"] == "output")
    assert outputs[(f"rucio://{hist['scope']}", hist["name"].rstrip("/"))]["outputFacets"][
        "outputStatistics"]["fileCount"] == 3
    facet = complete[-1]["run"]["facets"]["panda"]
    assert facet["jediTaskID"] == run.xcom("produce") and facet["status"] == "done"
    assert facet["monitorUrl"].endswith(f"/monitor/task/{run.xcom('produce')}/")


def test_consumer_runs_on_the_produced_dataset(produced, dags_test, panda_server):  # noqa: F811
    run, _ = produced
    hist = next(o for o in run.xcom("produce", "output_datasets") if o["type"] == "output")
    consumed = dags_test("panda_consume_dataset", in_ds=hist["did"], tag="consume")
    assert consumed.states == {"pick": "success", "analyse": "success"}
    [task] = [t for t in panda_tasks(panda_server, ".airflow.consume.consume.")
              if t.task_id == consumed.xcom("analyse")]
    assert task.params["dsForIN"] == hist["did"]
    [listing] = panda_server.sim.datasets_and_files(task.task_id, ["input"])
    assert len(listing["files"]) == 3  # the producer's three files, as the consumer's input


def test_chain_through_xcom(dags_test, panda_server):  # noqa: F811
    run = dags_test("panda_chain_through_xcom", tag="chain")
    assert run.states == {"generate": "success", "analyse": "success"}
    generated = next(o for o in run.xcom("generate", "output_datasets") if o["type"] == "output")
    [analyse] = [t for t in panda_server.sim.tasks.values() if t.task_id == run.xcom("analyse")]
    assert analyse.params["dsForIN"] == generated["did"] and generated["n_files"] == 2
    [listing] = panda_server.sim.datasets_and_files(analyse.task_id, ["input"])
    assert [f["lfn"] for f in listing["files"]] == generated["files"]


def test_fan_in_of_a_mapped_producer(dags_test, panda_server):  # noqa: F811
    run = dags_test("panda_fan_in", tag="fanin")
    assert run.states == {"generate[0]": "success", "generate[1]": "success", "generate[2]": "success",
                          "merge": "success"}, run.output[-3000:]
    produced = [o["did"] for i in range(3) for o in run.xcom("generate", "output_datasets", map_index=i)
                if o["type"] == "output"]
    assert [did.split(".fanin.")[1].split(".", 1)[1] for did in produced] == [
        "s11_evt.root/", "s12_evt.root/", "s13_evt.root/"]
    [merge] = [t for t in panda_server.sim.tasks.values() if t.task_id == run.xcom("merge")]
    assert merge.params["dsForIN"] == ",".join(produced)  # every map index's container, in map-index order
    assert merge.status == "done" and merge.name.endswith(".merged/")
