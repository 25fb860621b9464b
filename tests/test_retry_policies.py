"""Automatic retries that learn from the failure, end to end: SubmitTaskOperator(auto_retry_policy=...)
against the local server, whose failed jobs report the error codes the pilot and PanDA write."""

from __future__ import annotations

import re

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes

MEMORY = {"pilotErrorCode": 1212, "pilotErrorDiag": "Payload ran out of memory", "transExitCode": 0,
          "exeErrorCode": 0, "exeErrorDiag": None}
POLICY = "from airflow_provider_panda.retry_policy import DefaultRetryPolicy\n"


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def test_jobs_killed_for_memory_are_retried_with_more(panda_server, capfd):
    params = params_with_outcomes(panda_server, ["failed", "done"], "memory", ramCount=2000)
    panda_server.sim.add_job_errors(re.escape(params["taskName"]) + "$", [MEMORY])
    run = run_dag(POLICY + "SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.2, "
                  "auto_retry_policy=DefaultRetryPolicy())\n", params=repr(params))
    assert run.states == {"submit": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name == params["taskName"]]
    assert task.attempt == 1 and task.params["ramCount"] == 3000
    out = "".join(capfd.readouterr())
    assert "pilot error 1212" in out and "retrying with ramCount 2000 -> 3000" in out, out[-3000:]
    [attempt] = run.xcom("submit", "panda_attempts")
    assert attempt["retried_with"] == {"ramCount": 3000} and attempt["action"] == "retry"


def test_the_tasks_own_code_is_not_retried(panda_server, capfd):
    """Every job exits 1 on the payload: no PanDA retry, and no Airflow retry either."""
    params = params_with_outcomes(panda_server, ["failed", "done"], "usercode")
    run = run_dag(POLICY + "SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.2, "
                  "retries=2, retry_delay=timedelta(seconds=0), auto_retry_policy=DefaultRetryPolicy())\n",
                  params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    [task] = [t for t in panda_server.sim.tasks.values() if t.name == params["taskName"]]
    assert task.attempt == 0
    out = "".join(capfd.readouterr())
    assert "not retried: the payload's own exit code (1) fails on every site" in out, out[-3000:]
    assert "No Airflow retry is spent on it" in out


def test_a_policy_is_a_few_lines(panda_server, capfd):
    """A user's own policy: retry once with more memory whatever the cause, then stop."""
    params = params_with_outcomes(panda_server, ["failed", "done"], "ownpolicy", ramCount=1000)
    body = """\
        from airflow_provider_panda.retry_policy import RETRY, STOP, Decision

        def once_more_memory(diagnosis, retries_so_far):
            if retries_so_far:
                return Decision(STOP, f"{diagnosis.evidence}; already retried")
            return Decision(RETRY, f"{diagnosis.evidence}; one retry with 2 GB", {"ramCount": 2000})

        SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.2, auto_retry_policy=once_more_memory)
        """
    run = run_dag(body, params=repr(params))
    assert run.states == {"submit": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name == params["taskName"]]
    assert task.params["ramCount"] == 2000 and "one retry with 2 GB" in "".join(capfd.readouterr())


def test_retry_operator_follows_a_policy(panda_server, hook):
    """RetryTaskOperator(auto_retry_policy=...): memory → more memory; the task's own code → no retry."""
    from conftest import wait_status

    memory = params_with_outcomes(panda_server, ["failed", "done"], "retrymem", ramCount=2000)
    panda_server.sim.add_job_errors(re.escape(memory["taskName"]) + "$", [MEMORY])
    own_code = params_with_outcomes(panda_server, ["failed", "done"], "retrycode")
    ids = {name: hook.submit_task(p) for name, p in (("memory", memory), ("own_code", own_code))}
    for task_id in ids.values():
        wait_status(hook, task_id, {"failed"})
    run = run_dag(POLICY + "for name, tid in $ids.items():\n"
                  "    RetryTaskOperator(task_id=name, jedi_task_id=tid, wait_for_completion=True, poll_interval=0.2,"
                  " auto_retry_policy=DefaultRetryPolicy())\n", ids=repr(ids))
    assert run.states == {"memory": "success", "own_code": "failed"}
    tasks = panda_server.sim.tasks
    assert tasks[ids["memory"]].params["ramCount"] == 3000 and tasks[ids["memory"]].attempt == 1
    assert tasks[ids["own_code"]].attempt == 0
