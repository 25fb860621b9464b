"""The operators' main flows against the real panda-server + JEDI (``REAL_PANDA=1``): real DAG runs,
with a stand-in pilot in a background thread ending each attempt's jobs as the test asks."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from airflow_runs import run_dag
from backends import N_JOBS, RealBackend

from airflow_provider_panda.hooks.panda import PandaHook

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")
POLL = "poll_interval=1"


@pytest.fixture
def backend(real_server, monkeypatch):
    backend = RealBackend(real_server)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(backend.connection()))
    return backend


def pilot_for(backend: RealBackend, task_name: str, outcomes: list[str]) -> threading.Thread:
    """Find the task by name once it exists, then end its attempts with ``outcomes`` in turn."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            hook = PandaHook()
            deadline = time.monotonic() + backend.timeout
            task_id = None
            while task_id is None and time.monotonic() < deadline:
                tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
                task_id = next((t for t, info in tasks.items() if info["taskName"] == task_name), None)
                time.sleep(1)
            for outcome in outcomes:
                backend.pilot.run_task(task_id, outcome, expected_jobs=N_JOBS, timeout=backend.timeout)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.mark.parametrize("deferrable", [True])
def test_submit_and_wait_to_done(backend, deferrable):
    params = backend.task_params("flowdone")
    pilot = pilot_for(backend, params["taskName"], ["done"])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, deferrable={deferrable}, {POLL})",
                  params=repr(params))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}
    assert PandaHook().get_task_status(run.xcom("submit")) == "done"


def test_failed_task_retried_to_done(backend):
    params = backend.task_params("flowretry")
    pilot = pilot_for(backend, params["taskName"], ["failed", "done"])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=1, {POLL})",
                  params=repr(params))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}
    assert PandaHook().get_task_status(run.xcom("submit")) == "done"


def test_kill_to_aborted(backend):
    hook = PandaHook()
    task_id = hook.submit_task(backend.task_params("flowkill"))
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id}, wait_for_termination=True, {POLL})")
    assert run.states == {"kill": "success"} and run.xcom("kill") == "aborted"


def test_file_recovery_request_accepted(backend):
    hook = PandaHook()
    task_id = hook.submit_task(backend.task_params("flowrecov"))
    run = run_dag(f"FileRecoveryOperator(task_id='recover', jedi_task_id={task_id}, dry_run=True)")
    assert run.states == {"recover": "success"} and "/cache/jedilog/lost_file_recovery." in run.xcom("recover")
    hook.kill_task(task_id)
