"""One contract, two servers: every hook method gives the same kind of answer (values, codes,
exception types, final statuses) from our local server and from the real panda-server + JEDI.

The local server always runs; the real one joins when ``REAL_PANDA=1`` (``make test-real``), which
starts it with integration/real_panda/harness.py and stops it afterwards.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid

import pytest
from backends import N_JOBS, LocalBackend, RealBackend

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import (
    PandaCallFailed,
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaNotFoundError,
    PandaPermissionError,
)
from airflow_provider_panda.hooks.panda import PandaHook

BACKENDS = ["local"] + (["real"] if os.environ.get("REAL_PANDA") == "1" else [])


@pytest.fixture(params=BACKENDS)
def backend(request, panda_server):
    if request.param == "local":
        return LocalBackend(panda_server)
    return RealBackend(request.getfixturevalue("real_server"))


@pytest.fixture
def connect(backend, monkeypatch):
    def make(user: str = "user", **extra) -> PandaHook:
        conn_id = f"contract_{user}_{uuid.uuid4().hex[:6]}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(backend.connection(user, **extra)))
        return PandaHook(conn_id)

    return make


@pytest.fixture
def hook(connect):
    return connect()


def status_of(hook: PandaHook, task_id: int) -> str | None:
    try:
        return hook.get_task_status(task_id)
    except PandaNotFoundError:
        return None


def wait_status(backend, hook, task_id, statuses) -> str:
    from conftest import wait_for

    return wait_for(lambda: (s := status_of(hook, task_id)) in statuses and s, timeout=backend.timeout, interval=0.5)


def running_task(backend, hook, tag="c") -> int:
    task_id = hook.submit_task(backend.task_params(tag))
    wait_status(backend, hook, task_id, {"running"})
    return task_id


def ended_task(backend, hook, outcome, tag="c") -> int:
    task_id = running_task(backend, hook, tag)
    backend.finish_attempt(task_id, outcome)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == outcome
    return task_id


# --- cases ------------------------------------------------------------------------------------------


def test_hello(hook):
    assert isinstance(hook.hello(), str)


def test_submit_returns_an_id_and_the_task_moves(backend, hook):
    task_id = hook.submit_task(backend.task_params("submit"))
    assert isinstance(task_id, int) and task_id > 0
    assert wait_status(backend, hook, task_id, {"running"}) == "running"
    assert len(hook.get_job_ids(task_id)) == N_JOBS


def test_unknown_task(hook):
    with pytest.raises(PandaNotFoundError):
        hook.get_task_status(2**40)
    with pytest.raises(PandaNotFoundError):
        hook.get_task_params(2**40)
    assert hook.get_job_ids(2**40) == []


def test_task_params_round_trip(backend, hook):
    params = backend.task_params("params")
    task_id = hook.submit_task(params)
    wait_status(backend, hook, task_id, {"defined", "ready", "running"})
    got = hook.get_task_params(task_id)
    assert got["taskName"] == params["taskName"] and got["userName"] == "Alice Analyst"


def test_duplicate_of_an_active_task(backend, hook):
    params = backend.task_params("dup")
    task_id = hook.submit_task(params)
    with pytest.raises(PandaDuplicateTaskError) as info:
        hook.submit_task(params)
    assert info.value.code in (api.SubmitCode.DUPLICATE_DEFT, api.SubmitCode.DUPLICATE_JEDI)
    assert info.value.task_id == task_id


def test_task_done_with_jobs_and_metadata(backend, hook):
    task_id = ended_task(backend, hook, "done", "done")
    job_ids = hook.get_job_ids(task_id)
    assert {j["jobStatus"] for j in hook.get_full_job_status(job_ids)} == {"finished"}
    assert isinstance(hook.get_user_job_metadata(task_id), dict)
    tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
    assert tasks[task_id]["status"] == "done"


def test_failed_task_retried_to_done(backend, hook):
    task_id = ended_task(backend, hook, "failed", "retry")
    jobs = hook.get_full_job_status(hook.get_job_ids(task_id))
    assert {j["jobStatus"] for j in jobs} == {"failed"} and all(j["pilotErrorCode"] for j in jobs)
    assert "command=retry is registered" in hook.retry_task(task_id)
    wait_status(backend, hook, task_id, {"running"})
    backend.finish_attempt(task_id, "done")
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "done"


def test_task_details_and_lookup_by_name(backend, hook):
    """task/get_detailed_info and task/get_tasks_detailed_info_since: what waits (attemptNr,
    stateChangeTime, errorDialog, file counts) and the ownership check (lookup by name) read."""
    params = backend.task_params("details")
    task_id = hook.submit_task(params)
    wait_status(backend, hook, task_id, {"running"})
    backend.finish_attempt(task_id, "failed")
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "failed"
    info = hook.get_task_info(task_id)
    assert info["jediTaskID"] == task_id and info["status"] == "failed" and info["attemptNr"] == 0
    assert info["taskName"] == params["taskName"] and info["stateChangeTime"] is not None
    assert "errorDialog" in info and isinstance(info["nFiles"], int) and isinstance(info["nFilesFailed"], int)
    assert info["raw_task_params"]["taskName"] == params["taskName"]
    [found] = hook.find_tasks_by_name(params["taskName"])
    assert found["jediTaskID"] == task_id and found["raw_task_params"]["taskName"] == params["taskName"]
    assert hook.find_tasks_by_name(params["taskName"] + ".nosuchtask") == []
    hook.retry_task(task_id)
    wait_status(backend, hook, task_id, {"running"})
    assert hook.get_task_info(task_id)["attemptNr"] == 1  # a new attempt, as waits tell it
    backend.finish_attempt(task_id, "done")
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "done"
    with pytest.raises(PandaNotFoundError):
        hook.get_task_info(2**40)


def test_resubmitting_an_aborted_name_reexecutes_it(backend, hook):
    """PanDA's answer to a finished name is an incremental execution of that task, not a refusal:
    what the ownership check guards against, and what an Airflow retry after a kill uses."""
    params = backend.task_params("incexec")
    task_id = hook.submit_task(params)
    wait_status(backend, hook, task_id, {"running"})
    hook.kill_task(task_id)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "aborted"
    answer = hook.submit(params)
    assert answer.task_id == task_id and answer.reexecuted
    # JEDI re-refines the task (aborted > rerefine > defined > ... > running); attemptNr is no
    # guide here: the real JEDI shows 1 in rerefine and 0 again once the task is re-refined
    wait_status(backend, hook, task_id, {"running"})
    backend.finish_attempt(task_id, "done")
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "done"


def test_retry_of_a_done_task_is_rejected(backend, hook):
    task_id = ended_task(backend, hook, "done", "retrydone")
    with pytest.raises(PandaCommandRejected) as info:
        hook.retry_task(task_id)
    assert info.value.code == api.CommandCode.BAD_STATUS


def test_kill_to_aborted_then_rejected(backend, hook):
    task_id = running_task(backend, hook, "kill")
    assert "command=kill is registered" in hook.kill_task(task_id)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "aborted"
    with pytest.raises(PandaCommandRejected) as info:
        hook.kill_task(task_id)
    assert info.value.code == api.CommandCode.BAD_STATUS


def test_finish(backend, hook):
    task_id = running_task(backend, hook, "finish")
    assert "command=finish is registered" in hook.finish_task(task_id)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) in ("finished", "done", "failed")


def test_commands_on_someone_elses_task(backend, hook, connect):
    task_id = running_task(backend, hook, "owner")
    bob = connect("other")
    with pytest.raises(PandaPermissionError):
        bob.kill_task(task_id)
    with pytest.raises(PandaPermissionError):
        bob.send_file_recovery_request(task_id)
    hook.kill_task(task_id)


def test_production_role_calls(backend, hook, connect):
    task_id = running_task(backend, hook, "prod")
    prod = connect("prod")
    with pytest.raises(PandaPermissionError):
        hook.resume_task(task_id)
    with pytest.raises(PandaPermissionError):
        hook.reactivate_task(task_id)
    with pytest.raises(PandaCommandRejected) as info:
        prod.resume_task(task_id)  # running: nothing to resume
    assert info.value.code == api.CommandCode.BAD_STATUS
    job_id = hook.get_job_ids(task_id)[0]
    with pytest.raises(PandaPermissionError):
        hook.send_command_to_job(job_id, "tobekilled")
    assert isinstance(prod.send_command_to_job(job_id, "tobekilled"), str)
    hook.kill_task(task_id)


def test_reactivate_a_done_task(backend, hook, connect):
    task_id = ended_task(backend, hook, "done", "react")
    assert "was reactivated" in connect("prod").reactivate_task(task_id)
    assert wait_status(backend, hook, task_id, {"ready", "running", "scouting", "defined"})


def test_job_calls(backend, hook):
    task_id = running_task(backend, hook, "jobs")
    job_ids = hook.get_job_ids(task_id)
    described = hook.get_job_status(job_ids + [2**40])
    assert [j["PandaID"] for j in described[:-1]] == job_ids and described[-1] is None
    assert hook.kill_jobs([job_ids[0]]) == [True]
    hook.kill_task(task_id)


def test_file_recovery_request(backend, hook):
    task_id = running_task(backend, hook, "recov")
    url = hook.send_file_recovery_request(task_id, dry_run=True)
    assert "/cache/jedilog/lost_file_recovery." in url
    hook.kill_task(task_id)


def test_put_file(hook, tmp_path):
    path = tmp_path / f"user.alice.{uuid.uuid4().hex[:8]}.tgz"
    path.write_bytes(gzip.compress(b"contract"))
    assert hook.put_file(str(path)) == path.name
    with pytest.raises(PandaCallFailed, match="cannot overwrite"):
        hook.put_file(str(path))


def test_user_name_from_token(hook):
    assert hook.get_user_name_from_token() == ("Alice Analyst", ["atlas"], "alice")


def test_output_datasets_and_files(backend, hook):
    """task/get_datasets_and_files and task/get_details: what a finished task produced, by type,
    and the reading the operators' ``output_datasets`` XCom is made of (assets.read_outputs)."""
    from airflow_provider_panda import assets

    params = backend.task_params("outputs")
    name = params["taskName"]
    output = {"type": "template", "param_type": "output", "value": "user.alice.$JEDITASKID._${SN/P}.out.txt",
              "dataset": f"{name}_out.txt/", "container": f"{name}_out.txt/", "hidden": True}
    params["jobParameters"] = [*params["jobParameters"], output]
    task_id = hook.submit_task(params)
    wait_status(backend, hook, task_id, {"running"})
    [running] = hook.get_datasets_and_files(task_id, ["output"])
    assert running["dataset"]["name"].startswith(f"{name}_out.txt.")  # JEDI's dataset in the container
    assert {f["status"] for f in running["files"]} <= {"running", "defined", "ready"}
    backend.finish_attempt(task_id, "done")
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "done"
    [out] = hook.get_datasets_and_files(task_id, ["output"])
    [log] = hook.get_datasets_and_files(task_id, ["log"])
    assert log["dataset"]["name"].startswith(f"{name}.log.")
    for listing in (out, log):
        assert isinstance(listing["dataset"]["id"], int) and len(listing["files"]) == N_JOBS
        assert all(set(f) == {"lfn", "scope", "id", "status"} and f["status"] == "finished" for f in listing["files"])
    assert sorted(f["lfn"] for f in out["files"]) == [f"user.alice.{task_id}._00000{n}.out.txt"
                                                       for n in range(1, N_JOBS + 1)]
    assert len(hook.get_datasets_and_files(task_id, ["output", "log"])) == 2
    assert hook.get_datasets_and_files(task_id, ["input"]) == []  # "No data found for the task"
    assert hook.get_datasets_and_files(2**40, ["output"]) == []
    details = hook.get_task_details(task_id, include_parameters=True, include_status=True)
    assert details["status"] == "done" and details["inDS"] == ""
    assert {f"{name}_out.txt/", f"{name}.log/"} <= set(details["outDS"].split(","))
    assert sorted(details["PandaID"]) == sorted(hook.get_job_ids(task_id)) and "finished*" in details["statistics"]
    assert hook.get_task_details(2**40)["outDS"] == ""  # an unknown task: an empty digest, not an error
    with pytest.raises(PandaNotFoundError):
        hook.get_task_details(2**40, include_status=True)
    summary = {o["name"]: o for o in assets.read_outputs(hook, task_id)}
    assert summary[f"{name}_out.txt/"]["n_files"] == N_JOBS and summary[f"{name}_out.txt/"]["type"] == "output"
    assert summary[f"{name}.log/"]["type"] == "log"
    assert summary[f"{name}_out.txt/"]["uri"] == f"rucio://user.alice/{name}_out.txt"
