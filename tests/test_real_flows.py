"""The operators' and the sensor's flows against the real panda-server + JEDI (``REAL_PANDA=1``): real
DAG runs (``dag.test()``), with a stand-in pilot in a background thread ending each attempt's jobs as
the test asks. Each flow checks both sides: the Airflow run (states, XComs, what the wait saw) and
PanDA (the task's status and attempt number, its jobs' statuses and attempt numbers, read from the
server). No fixed sleeps: every wait is for a condition, with the backend's generous deadline.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from airflow_runs import run_dag
from backends import N_JOBS, RealBackend
from conftest import wait_for

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaNotFoundError
from airflow_provider_panda.hooks.panda import PandaHook

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")
#: Poll each second; a flow that regresses fails at the operator's timeout instead of hanging the suite.
POLL = f"poll_interval=1, timeout={RealBackend.timeout:.0f}"


@pytest.fixture
def backend(real_server, monkeypatch):
    backend = RealBackend(real_server)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(backend.connection()))
    return backend


@pytest.fixture
def hook(backend):
    return PandaHook()


def status_of(hook: PandaHook, task_id: int) -> str | None:
    try:
        return hook.get_task_status(task_id)
    except PandaNotFoundError:
        return None


def wait_status(backend: RealBackend, hook: PandaHook, task_id: int, statuses: set[str] | frozenset[str]) -> str:
    return wait_for(lambda: (s := status_of(hook, task_id)) in statuses and s, timeout=backend.timeout, interval=0.5)


def task_by_name(backend: RealBackend, hook: PandaHook, name: str) -> int:
    """The id of the task named ``name``, once the server lists it."""
    def find() -> int | None:
        tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
        return next((t for t, info in tasks.items() if info["taskName"] == name), None)

    return wait_for(find, timeout=backend.timeout, interval=1)


def pilot_for(backend: RealBackend, outcomes: list[str], *, task_name: str | None = None,
              task_id: int | None = None, when: str | None = None) -> threading.Thread:
    """End the task's attempts with ``outcomes`` in turn (after it reached status ``when``, if given);
    the task is given by id, or by name (found once it exists)."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            hook = PandaHook()
            tid = task_id if task_id is not None else task_by_name(backend, hook, task_name)
            if when:
                wait_status(backend, hook, tid, {when})
            for outcome in outcomes:
                backend.pilot.run_task(tid, outcome, expected_jobs=N_JOBS, timeout=backend.timeout)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def joined(pilot: threading.Thread, backend: RealBackend) -> list[BaseException]:
    """Wait for the pilot to finish its work (it has by the time its task ended) and give its errors."""
    pilot.join(backend.timeout)
    assert not pilot.is_alive(), "the stand-in pilot did not finish"
    return pilot.errors  # type: ignore[attr-defined]


def task_info(backend: RealBackend, task_id: int) -> dict:
    """The server's task record (``task/get_detailed_info``: status, attemptNr, ...), read as the owner."""
    import requests

    token = backend.connection()["password"]
    answer = requests.get(f"{backend.url}/api/v1/task/get_detailed_info", params={"task_id": task_id}, timeout=60,
                          headers={"Authorization": f"Bearer {token}", "Origin": "atlas", "Accept": "application/json"})
    answer.raise_for_status()
    envelope = answer.json()
    assert envelope["success"], envelope
    return envelope["data"]


def job_attempts(hook: PandaHook, task_id: int) -> Counter:
    """How many of the task's jobs the server has per (attempt number, job status)."""
    return Counter((job["attemptNr"], job["jobStatus"]) for job in hook.get_task_jobs(task_id) if job)


def saw_move_to(output: str, task_id: int, status: str) -> bool:
    """The wait logged a move from a non-final status to ``status`` (it waited; it did not just read it)."""
    return re.search(rf"PanDA task {task_id}: (?!\(start\))(\w+) -> {status}\b", output) is not None


# --- SubmitTaskOperator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True])
def test_submit_and_wait_to_done(backend, hook, capfd, deferrable):
    params = backend.task_params("flowdone")
    pilot = pilot_for(backend, ["done"], task_name=params["taskName"])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, deferrable={deferrable}, {POLL})",
                  params=repr(params))
    assert not joined(pilot, backend) and run.states == {"submit": "success"}
    task_id = run.xcom("submit")
    assert task_id == run.xcom("submit", "jedi_task_id") == task_by_name(backend, hook, params["taskName"])
    assert saw_move_to(capfd.readouterr().out, task_id, "done")
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 0)
    assert job_attempts(hook, task_id) == {(1, "finished"): N_JOBS}


def test_failed_task_retried_to_done(backend, hook):
    params = backend.task_params("flowretry")
    pilot = pilot_for(backend, ["failed", "done"], task_name=params["taskName"])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=1, {POLL})",
                  params=repr(params))
    assert not joined(pilot, backend) and run.states == {"submit": "success"}
    task_id = run.xcom("submit")
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 1)  # one retry in PanDA, no second task
    assert job_attempts(hook, task_id) == {(1, "failed"): N_JOBS, (2, "finished"): N_JOBS}


# --- TaskStatusSensor -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_waits_until_done(backend, hook, capfd, mode):
    task_id = hook.submit_task(backend.task_params(f"sens{mode[:4]}"))
    pilot = pilot_for(backend, ["done"], task_id=task_id)
    args = "deferrable=True" if mode == "deferrable" else f"mode='{mode}'"
    run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id='{task_id}', poke_interval=1, "
                  f"timeout={backend.timeout:.0f}, {args})")
    assert not joined(pilot, backend) and run.states == {"wait": "success"}
    output = capfd.readouterr().out
    if mode == "reschedule":  # each poke is a try of its own: the run rescheduled the sensor
        from airflow.models.taskreschedule import TaskReschedule
        from airflow.utils.session import create_session

        with create_session() as session:
            assert session.query(TaskReschedule).join(TaskReschedule.task_instance).filter_by(
                dag_id=run.dag_id, run_id=run.run_id).count() >= 1
    else:
        assert saw_move_to(output, task_id, "done")
    if mode == "deferrable":
        assert f"PanDA task {task_id} reached done" in output  # execute_complete: it resumed from the trigger
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 0)
    assert job_attempts(hook, task_id) == {(1, "finished"): N_JOBS}


# --- RetryTaskOperator ----------------------------------------------------------------------------------------


def test_retry_operator_retries_a_failed_task_to_done(backend, hook, capfd):
    task_id = hook.submit_task(backend.task_params("retryop"))
    pilot = pilot_for(backend, ["failed", "done"], task_id=task_id)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "failed"
    assert task_info(backend, task_id)["attemptNr"] == 0
    run = run_dag(f"RetryTaskOperator(task_id='retry', jedi_task_id={task_id}, wait_for_completion=True, {POLL})")
    assert not joined(pilot, backend) and run.states == {"retry": "success"}
    assert run.xcom("retry") == task_id == run.xcom("retry", "jedi_task_id")
    assert "command=retry is registered" in capfd.readouterr().out
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 1)
    assert job_attempts(hook, task_id) == {(1, "failed"): N_JOBS, (2, "finished"): N_JOBS}


# --- FinishTaskOperator ---------------------------------------------------------------------------------------


def test_finish_operator_ends_a_running_task(backend, hook):
    """A hard finish of a running task none of whose jobs ran: its queued jobs are cancelled and
    the task ends ``failed`` (nothing succeeded); a second finish finds it ended and succeeds."""
    task_id = hook.submit_task(backend.task_params("finishop"))
    wait_status(backend, hook, task_id, {"running"})
    run = run_dag(f"FinishTaskOperator(task_id='finish', jedi_task_id={task_id}, wait_for_completion=True, {POLL})")
    assert run.states == {"finish": "success"} and run.xcom("finish") == task_id
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("failed", 0)
    assert job_attempts(hook, task_id) == {(1, "cancelled"): N_JOBS}
    again = run_dag(f"FinishTaskOperator(task_id='finish', jedi_task_id={task_id})")
    assert again.states == {"finish": "success"} and again.xcom("finish") == task_id


# --- KillTaskOperator, FileRecoveryOperator -------------------------------------------------------------------


def test_kill_to_aborted(backend, hook):
    task_id = hook.submit_task(backend.task_params("flowkill"))
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id}, wait_for_completion=True, {POLL})")
    assert run.states == {"kill": "success"} and run.xcom("kill") == task_id
    assert task_info(backend, task_id)["status"] == "aborted"


def test_file_recovery_request_accepted(backend, hook):
    task_id = hook.submit_task(backend.task_params("flowrecov"))
    run = run_dag(f"FileRecoveryOperator(task_id='recover', jedi_task_id={task_id}, dry_run=True)")
    assert run.states == {"recover": "success"} and "/cache/jedilog/lost_file_recovery." in run.xcom("recover")
    hook.kill_task(task_id)


# --- the harness ------------------------------------------------------------------------------------------------


def test_backdate_status_hides_the_change_from_modified_since(backend, hook):
    """harness.backdate_status writes a status as JEDI's updateTaskModTimeJEDI does: get_status shows
    it, get_tasks_modified_since(now - 1 h) does not list the task (its modificationTime is yesterday)."""
    from integration.real_panda.harness import backdate_status

    task_id = hook.submit_task(backend.task_params("backdate"))
    wait_status(backend, hook, task_id, {"running"})
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    assert task_id in hook.get_tasks_modified_since(now - timedelta(hours=2))  # before: a recent change
    backdate_status(task_id, "failed")
    assert hook.get_task_status(task_id) == "failed"
    assert task_id not in hook.get_tasks_modified_since(now - timedelta(hours=1))
    assert task_id not in hook.get_tasks_modified_since(now - timedelta(hours=2))
    listed = hook.get_tasks_modified_since("2000-01-01 00:00:00")[task_id]
    assert listed["status"] == "failed"
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    assert listed["modificationTime"] == datetime.combine(yesterday, datetime.min.time())  # CURRENT_DATE-1
    with pytest.raises(LookupError):
        backdate_status(999999999, "failed")
    with pytest.raises(ValueError):
        backdate_status(task_id, "failed'; DROP TABLE x; --")
