"""Outputs as data: the XCom ``output_datasets``, ``rucio://`` assets and the asset events a real
DAG run emits (``dag.test()`` against the local PanDA server)."""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import urlsplit

import pytest
from airflow_runs import run_dag

from airflow_provider_panda import assets
from airflow_provider_panda.exceptions import PandaInputError

FAST = "poll_interval=0.05"


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def asset_events(uri: str) -> list[dict]:
    """Extras of the asset events Airflow recorded for a URI, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.uri == uri).order_by(AssetEvent.id).all())
        return [dict(row.extra or {}) for row in rows]


def prun_body(out_ds: str, outlets: str, extra: str = "", outcome_tag: str = "") -> str:
    return f"""
from airflow.sdk import Asset, AssetAlias
from airflow_provider_panda.builder import PrunTask
SubmitTaskOperator(task_id='produce', {FAST}, {extra}
    panda_task=PrunTask(exec='make %RNDM:1', out_ds='{out_ds}', outputs=['out.txt', 'hist.root'], n_jobs=4),
    outlets={outlets})
"""


@pytest.mark.parametrize("deferrable", [False, True])
def test_outputs_in_xcom_and_asset_events(panda_server, deferrable):
    out_ds = f"user.alice.outputs.{uuid.uuid4().hex[:10]}"
    alias = f"alias-{out_ds}"
    hist = f"rucio://user.alice/{out_ds}_hist.root"
    run = run_dag(prun_body(out_ds, f"[AssetAlias('{alias}'), Asset('{hist}')]", f"deferrable={deferrable},"))
    assert run.states == {"produce": "success"}
    task_id = run.xcom("produce")
    outputs = {o["name"]: o for o in run.xcom("produce", "output_datasets")}
    assert all(o["dataset"].startswith(o["name"].rstrip("/") + ".") for o in outputs.values())
    assert set(outputs) == {f"{out_ds}_out.txt/", f"{out_ds}_hist.root/", f"{out_ds}.log/"}
    out = outputs[f"{out_ds}_out.txt/"]
    assert (out["type"], out["scope"], out["n_files"], out["n_files_failed"]) == ("output", "user.alice", 4, 0)
    assert out["files"] == [f"user.alice.{task_id}._00000{n}.out.txt" for n in range(1, 5)]
    assert out["uri"] == f"rucio://user.alice/{out_ds}_out.txt"
    assert outputs[f"{out_ds}.log/"]["type"] == "log"
    assert outputs[f"{out_ds}.log/"]["files"][0] == f"{out_ds}.log.{task_id}.000001.log.tgz"
    # One event per output dataset through the alias (not for the log), and the declared Asset's extra.
    events = asset_events(out["uri"])
    assert len(events) == 1
    extra = events[0]
    assert extra["jediTaskID"] == task_id and extra["n_files"] == 4 and extra["partial"] is False
    assert extra["status"] == "done" and extra["container"] == f"{out_ds}_out.txt/"
    assert extra["monitor_url"] == f"{panda_server.url}/monitor/task/{task_id}/"
    hist_events = asset_events(hist)
    assert hist_events and all(e["jediTaskID"] == task_id for e in hist_events)
    assert asset_events(f"rucio://user.alice/{out_ds}.log") == []


def test_partial_outputs_are_marked(panda_server):
    out_ds = f"user.alice.partial.{uuid.uuid4().hex[:10]}"
    panda_server.sim.add_rule(out_ds.replace(".", r"\."), ["finished"])
    run = run_dag(prun_body(out_ds, f"[AssetAlias('alias-{out_ds}')]", "allow_partial=True,"))
    assert run.states == {"produce": "success"}
    [extra] = asset_events(f"rucio://user.alice/{out_ds}_out.txt")
    assert extra["partial"] is True and extra["status"] == "finished"
    assert extra["n_files"] == 2 and extra["n_files_failed"] == 2  # the local server fails every other job


def test_no_outlets_no_events_but_xcom(panda_server):
    out_ds = f"user.alice.plain.{uuid.uuid4().hex[:10]}"
    run = run_dag(prun_body(out_ds, "[]"))
    assert run.states == {"produce": "success"}
    assert len(run.xcom("produce", "output_datasets")) == 3
    assert asset_events(f"rucio://user.alice/{out_ds}_out.txt") == []


def test_hook_reads_datasets_files_and_details(panda_server, hook):
    from conftest import wait_status

    from airflow_provider_panda.builder import PrunTask

    out_ds = f"user.alice.hook.{uuid.uuid4().hex[:10]}"
    task_id = hook.submit_task(PrunTask(exec="x", out_ds=out_ds, outputs=["a.txt"], n_jobs=2).to_params())
    wait_status(hook, task_id, {"done"})
    [listing] = hook.get_datasets_and_files(task_id, ["output"])
    assert listing["dataset"]["name"].startswith(f"{out_ds}_a.txt.") and len(listing["files"]) == 2
    assert [d["dataset"]["name"] for d in hook.get_datasets_and_files(task_id)] == ["pseudo_dataset"]
    assert hook.get_datasets_and_files(task_id, ["input"]) == []  # the server's "No data found for the task"
    details = hook.get_task_details(task_id, include_status=True)
    assert details["outDS"] == f"{out_ds}_a.txt/,{out_ds}.log/" and details["status"] == "done"
    with pytest.raises(PandaInputError):
        hook.get_datasets_and_files(task_id, "output")
    with pytest.raises(PandaInputError):
        hook.get_datasets_and_files(task_id, ["out put"])


@pytest.mark.parametrize("did, uri", [
    ("user.alice.ana_hist.root/", "rucio://user.alice/user.alice.ana_hist.root"),
    ("data18_13TeV:data18_13TeV.00348885.physics_Main.deriv.DAOD_PHYS.r13286_p4910",
     "rucio://data18_13TeV/data18_13TeV.00348885.physics_Main.deriv.DAOD_PHYS.r13286_p4910"),
    ("group.phys-higgs.ntup.v1", "rucio://group.phys-higgs/group.phys-higgs.ntup.v1"),
    ("mc23_13p6TeV.601229.evgen", "rucio://mc23_13p6TeV/mc23_13p6TeV.601229.evgen"),
])
def test_dataset_uri_and_back(did, uri):
    assert assets.dataset_uri(did) == uri
    from airflow.sdk import Asset

    assert Asset(uri).uri == uri  # the registered normaliser accepts it unchanged
    assert assets.did_from_uri(uri).split(":")[1] == did.split(":")[-1].rstrip("/")


@pytest.mark.parametrize("uri", [
    "rucio://user.alice/a/b", "rucio://user.alice/", "rucio:///user.alice.x", "rucio://bad scope/x",
    "rucio://user.alice/x?y=1", "rucio://u:p@user.alice/x", "rucio://user.alice:8443/x",
    "rucio://user.alice/" + "x" * 256, "rucio://" + "s" * 31 + "/x", "rucio://user.alice/x%20y",
    "rucio://user.alice/.hidden",
])
def test_malformed_rucio_uris_are_refused(uri):
    from airflow.sdk import Asset

    with pytest.raises(ValueError):
        assets.sanitize_uri(urlsplit(uri))
    if "@" in uri:
        return  # Airflow itself drops user info (with a warning) before the normaliser sees the URI
    with pytest.raises(ValueError):
        Asset(uri)


@pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")
def test_real_server_outputs_in_xcom_and_asset_event(real_server, monkeypatch):
    """On the real panda-server + JEDI (stand-in pilot reporting the output files): a deferred
    SubmitTaskOperator pushes both containers and emits the output's asset event with its extra."""
    from backends import RealBackend
    from test_real_flows import POLL, pilot_for

    backend = RealBackend(real_server)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(backend.connection()))
    params = backend.task_params("flowout")
    name = params["taskName"]
    params["jobParameters"] = [*params["jobParameters"], {
        "type": "template", "param_type": "output", "value": "user.alice.$JEDITASKID._${SN/P}.out.txt",
        "dataset": f"{name}_out.txt/", "container": f"{name}_out.txt/", "hidden": True}]
    pilot = pilot_for(backend, ["done"], task_name=name)
    run = run_dag(f"""
from airflow.sdk import AssetAlias
SubmitTaskOperator(task_id='submit', task_params=$params, deferrable=True, outlets=[AssetAlias('real-{name}')],
                   {POLL})
""", params=repr(params))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}
    task_id = run.xcom("submit")
    outputs = {o["type"]: o for o in run.xcom("submit", "output_datasets")}
    out = outputs["output"]
    assert out["name"] == f"{name}_out.txt/" and out["dataset"].startswith(f"{name}_out.txt.")
    assert out["files"] == [f"user.alice.{task_id}._00000{n}.out.txt" for n in range(1, 3)]
    assert outputs["log"]["name"] == f"{name}.log/" and outputs["log"]["n_files"] == 2
    [extra] = asset_events(out["uri"])
    assert extra["jediTaskID"] == task_id and extra["n_files"] == 2 and extra["status"] == "done"
