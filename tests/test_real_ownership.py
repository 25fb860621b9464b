# ruff: noqa: F811 - the fixtures backend and hook come from test_real_flows
"""The README's table "What each Airflow action does to the PanDA task", on the real panda-server +
JEDI (``REAL_PANDA=1``, ``make test-real``): real DAG runs (``dag.test()``), the stand-in pilot
ending each attempt's jobs, and the PanDA side read from the server (tasks per name, status,
attemptNr). The local-server versions of every row are in test_ownership.py; marks, clears and
kills through Airflow's API, under a real scheduler, in test_real_airflow.py.
"""

from __future__ import annotations

import os
import threading

import pytest
from airflow_runs import run_dag
from backends import N_JOBS
from test_real_flows import (  # noqa: F401 - fixtures
    POLL,
    backend,
    hook,
    joined,
    pilot_for,
    task_by_name,
    task_info,
    wait_status,
)

from airflow_provider_panda import api

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")


def test_real_a_name_held_by_a_done_task_fails_before_anything_changes(backend, hook, capfd):
    params = backend.task_params("ownheld")
    task_id = hook.submit_task(params)  # outside any task instance
    assert not joined(pilot_for(backend, ["done"], task_id=task_id), backend)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == "done"
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, {POLL})",
                  params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    [found] = hook.find_tasks_by_name(params["taskName"])  # still one task of that name
    assert found["jediTaskID"] == task_id
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 0)  # not re-executed
    assert f"is already held by PanDA task {task_id} (done)" in capfd.readouterr().out


def test_real_mapped_instances_submit_one_task_each(backend, hook):
    base = backend.task_params("ownmap")
    names = [f"{base['taskName']}.{i}" for i in range(2)]
    pilots = [pilot_for(backend, ["done"], task_name=name) for name in names]
    template = dict(base, taskName=base["taskName"] + ".{{ ti.map_index }}")
    run = run_dag(f"SubmitTaskOperator.partial(task_id='submit', {POLL}).expand(task_params=[$p, $p])",
                  p=repr(template))
    assert not any(joined(p, backend) for p in pilots)
    assert run.states == {"submit[0]": "success", "submit[1]": "success"}
    ids = [task_by_name(backend, hook, name) for name in names]
    assert len(set(ids)) == 2 and sorted(run.xcom("submit", map_index=i) for i in range(2)) == sorted(ids)
    for name in names:
        assert len(hook.find_tasks_by_name(name)) == 1


def test_real_airflow_retry_of_a_failed_task_retries_it_in_panda(backend, hook):
    params = backend.task_params("ownretry")
    pilot = pilot_for(backend, ["failed", "done"], task_name=params["taskName"])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, "
                  f"retry_delay=timedelta(0), {POLL})", params=repr(params))
    assert not joined(pilot, backend)
    assert run.states == {"submit": "success"} and run.tries("submit") == 2
    task_id = run.xcom("submit")
    assert [t["jediTaskID"] for t in hook.find_tasks_by_name(params["taskName"])] == [task_id]
    info = task_info(backend, task_id)
    assert (info["status"], info["attemptNr"]) == ("done", 1)


def test_real_airflow_retry_after_a_kill_reexecutes_the_aborted_task(backend, hook, capfd):
    """A user kills the task in its first attempt (pbook); the Airflow retry re-executes that same
    task through PanDA's incremental execution (same jediTaskID) and it runs to done."""
    params = backend.task_params("ownabort")
    errors: list[BaseException] = []

    def kill_then_run_the_reexecution() -> None:
        try:
            tid = task_by_name(backend, hook, params["taskName"])
            wait_status(backend, hook, tid, {"running"})
            hook.kill_task(tid)
            wait_status(backend, hook, tid, {"aborted"})
            wait_status(backend, hook, tid, {"running"})  # re-refined and running again
            backend.pilot.run_task(tid, "done", expected_jobs=N_JOBS, timeout=backend.timeout)
        except BaseException as exc:
            errors.append(exc)

    pilot = threading.Thread(target=kill_then_run_the_reexecution, daemon=True)
    pilot.start()
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, "
                  f"retry_delay=timedelta(0), {POLL})", params=repr(params))
    pilot.join(backend.timeout)
    assert not errors and run.states == {"submit": "success"} and run.tries("submit") == 2
    task_id = run.xcom("submit")
    assert [t["jediTaskID"] for t in hook.find_tasks_by_name(params["taskName"])] == [task_id]
    assert task_info(backend, task_id)["status"] == "done"
    out = capfd.readouterr().out
    assert f"PanDA task {task_id} ended aborted" in out
    assert "re-executing it through PanDA's incremental execution" in out


def test_real_a_broken_task_fails_without_spending_retries(backend, hook, capfd):
    """JEDI breaks a task whose definition cannot run; here the status is written as JEDI writes
    it (harness.backdate_status, back-dated as the event picker does for tobroken)."""
    from integration.real_panda.harness import backdate_status

    params = backend.task_params("ownbroken")

    def breaker() -> None:
        tid = task_by_name(backend, hook, params["taskName"])
        wait_status(backend, hook, tid, {"running"})
        backdate_status(tid, "broken")

    thread = threading.Thread(target=breaker, daemon=True)
    thread.start()
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=2, "
                  f"retry_delay=timedelta(0), {POLL})", params=repr(params))
    thread.join(backend.timeout)
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    assert task_info(backend, run.xcom("submit", "jedi_task_id"))["status"] == "broken"
    assert "No Airflow retry is spent on a broken task" in capfd.readouterr().out
