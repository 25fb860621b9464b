"""One Airflow task instance, one PanDA task: the README's table "What each Airflow action does to
the PanDA task", row by row, in real DAG runs (``dag.test()``) against the local PanDA server.

Each test checks the PanDA side (tasks per name, status, attempt numbers, no re-execution) as well
as the Airflow side. Rows that need a real scheduler (marks, clears, kills through Airflow's API)
are in test_real_airflow.py; the real-server versions in test_real_ownership.py.
"""

from __future__ import annotations

import uuid

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes, task_params, wait_status

FAST = "poll_interval=0.05"


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def named(server, name):
    return sorted((t for t in server.sim.tasks.values() if t.name == name), key=lambda t: t.task_id)


def test_first_try_with_a_new_name_submits_one_task(panda_server):
    params = task_params("own1")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST})", params=repr(params))
    [task] = named(panda_server, params["taskName"])
    assert run.states == {"submit": "success"} and run.xcom("submit") == task.task_id
    assert task.attempt == 0 and task.status == "done"
    owner = task.params["airflowTaskInstance"]
    assert owner == f"{run.dag_id}/submit/{run.run_id}/-1"


def test_mapped_instances_of_one_template_submit_one_task_each(panda_server):
    """The README's template names tasks with the run and the map index."""
    tag = uuid.uuid4().hex[:8]
    run = run_dag("""\
        SubmitTaskOperator.partial(task_id='submit', poll_interval=0.05).expand(task_params=[
            {"taskName": "user.alice.map.$tag.{{ ti.map_index }}", "vo": "atlas", "prodSourceLabel": "user",
             "noInput": True, "nEvents": 5, "nEventsPerJob": 5, "sample": sample} for sample in ("a", "b", "c")])
        """, tag=tag)
    assert run.states == {"submit[0]": "success", "submit[1]": "success", "submit[2]": "success"}
    tasks = [t for t in panda_server.sim.tasks.values() if f".map.{tag}." in t.name]
    assert sorted(t.name[-1] for t in tasks) == ["0", "1", "2"]
    assert all(t.attempt == 0 and t.status == "done" for t in tasks)
    assert sorted(run.xcom("submit", map_index=i) for i in range(3)) == sorted(t.task_id for t in tasks)


def test_mapped_instances_sharing_one_name_never_share_a_task(panda_server, capfd):
    """A template without the map index: one instance submits; the others fail before anything
    changes on the server, naming the task that holds the name. Nobody re-executes anybody."""
    params = params_with_outcomes(panda_server, ["hang"], "mapsame")
    run = run_dag("""\
        SubmitTaskOperator.partial(task_id='submit', poll_interval=0.05, timeout=3).expand(
            task_params=[dict($params, sample=s) for s in ("a", "b", "c")])
        """, params=repr(params))
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 0  # never re-executed
    states = sorted(run.states.values())
    assert states == ["failed", "failed", "failed"]  # two refused, one timed out (it hangs)
    out = "".join(capfd.readouterr())
    assert f"is already held by PanDA task {task.task_id}" in out


@pytest.mark.parametrize("status", ["running", "done", "failed", "aborted"])
def test_a_name_held_by_another_task_fails_before_anything_changes(panda_server, hook, capfd, status):
    outcomes = {"running": ["hang"], "done": ["done"], "failed": ["failed"], "aborted": ["hang"]}[status]
    params = params_with_outcomes(panda_server, outcomes, "taken")
    other = hook.submit_task(params)  # submitted outside this task instance
    if status == "aborted":
        wait_status(hook, other, {"running"})
        hook.kill_task(other)
    wait_status(hook, other, {status}, timeout=20)
    before = panda_server.panda.requests["task/submit"]
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=2, {FAST})",
                  params=repr({k: v for k, v in params.items() if k != "airflowTaskInstance"}))
    assert run.states == {"submit": "failed"}
    [task] = named(panda_server, params["taskName"])
    assert task.task_id == other and task.attempt == 0 and task.status == status  # untouched
    assert panda_server.panda.requests["task/submit"] == before  # nothing was submitted
    out = "".join(capfd.readouterr())
    assert f"is already held by PanDA task {other} ({status})" in out and "ti.map_index" in out
    assert run.tries("submit") == 1  # no Airflow retry spent on it
    assert "XCom not found" not in out  # the monitor link of a task that never submitted is quiet


def test_a_name_older_than_the_lookup_window_is_reported_not_adopted(panda_server, hook, capfd):
    """PanDA's name lookup sees 90 days; an older finished task of the same name is re-executed by
    PanDA when the name comes again. The operator says so and fails; it does not adopt it."""
    from datetime import timedelta

    params = params_with_outcomes(panda_server, ["done"], "ancient")
    old = hook.submit_task(params)
    wait_status(hook, old, {"done"})
    panda_server.sim.tasks[old].modified -= timedelta(days=100)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST})", params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    out = "".join(capfd.readouterr())
    assert f"belongs to PanDA task {old}" in out and "It is not adopted" in out


def test_adopt_an_existing_task_when_asked(panda_server, hook, capfd):
    params = params_with_outcomes(panda_server, ["done"], "adopt")
    other = hook.submit_task(params)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, if_exists='adopt', {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "success"} and run.xcom("submit") == other
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 0
    assert "adopting it (if_exists='adopt')" in "".join(capfd.readouterr())


def test_reexecute_an_existing_finished_task_when_asked(panda_server, hook, capfd):
    params = params_with_outcomes(panda_server, ["done"], "reexec")
    other = hook.submit_task(params)
    wait_status(hook, other, {"done"})
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, if_exists='reexecute', {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "success"} and run.xcom("submit") == other
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 1 and task.status == "done"  # one incremental execution
    assert "re-executing it through PanDA's incremental execution" in "".join(capfd.readouterr())


def test_airflow_retry_of_a_failed_task_retries_it_in_panda(panda_server, capfd):
    params = params_with_outcomes(panda_server, ["failed", "done"], "afretry")
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, retry_delay=timedelta(0),
                           retry_new_params={{'ramCount': 4000}}, {FAST})
        """, params=repr(params))
    assert run.states == {"submit": "success"} and run.tries("submit") == 2
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 1 and task.status == "done" and task.params["ramCount"] == 4000
    assert "asking PanDA to retry it" in "".join(capfd.readouterr())


def test_airflow_retry_after_a_kill_reexecutes_the_aborted_task(panda_server, capfd):
    """on_timeout='kill' aborts the task; the Airflow retry re-executes that same task (one
    jediTaskID, a new attempt) and waits past the old 'aborted'."""
    params = params_with_outcomes(panda_server, ["hang", "done"], "afabort")
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, retry_delay=timedelta(0),
                           timeout=1, on_timeout='kill', {FAST})
        """, params=repr(params))
    [task] = named(panda_server, params["taskName"])
    assert run.states == {"submit": "success"} and run.tries("submit") == 2
    assert task.attempt == 1 and task.status == "done"
    out = "".join(capfd.readouterr())
    assert "was aborted: re-executing it through PanDA's incremental execution" in out
    assert "resubmitting" not in out


def test_a_broken_task_fails_without_spending_retries(panda_server, capfd):
    params = params_with_outcomes(panda_server, ["broken"], "afbroken")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=3, "
                  f"retry_delay=timedelta(0), {FAST})", params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    [task] = named(panda_server, params["taskName"])
    assert task.status == "broken" and task.attempt == 0
    out = "".join(capfd.readouterr())
    assert "PanDA says: task is broken" in out


def test_a_crash_between_submit_and_storing_the_id_leaves_one_task(panda_server, capfd):
    """The first try is cut off after the server accepted the task and before the answer arrived
    (execution_timeout during a slow answer); the retry finds the task by name and its owner key."""
    params = params_with_outcomes(panda_server, ["done"], "afcrash")
    panda_server.panda.submit_delays[params["taskName"].replace(".", r"\.")] = 3.0
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, retry_delay=timedelta(0),
                           execution_timeout=timedelta(seconds=1.5), {FAST})
        """, params=repr(params))
    assert run.states == {"submit": "success"} and run.tries("submit") == 2
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 0 and run.xcom("submit") == task.task_id
    assert "submitted by this task instance before" in "".join(capfd.readouterr())


def test_strings_inside_task_params_are_templates_not_files(panda_server):
    params = task_params("tplstr", jobParameters=[{"type": "constant", "value": "python run.py --config "
                                                  "settings.json --run {{ run_id }}"}])
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST})", params=repr(params))
    assert run.states == {"submit": "success"}
    [task] = named(panda_server, params["taskName"])
    value = task.params["jobParameters"][0]["value"]
    assert value.startswith("python run.py --config settings.json --run manual__")
