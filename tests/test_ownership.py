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
from conftest import params_with_outcomes, task_params, wait_for, wait_status

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
    wait_status(hook, other, {status}, timeout=120)
    before = panda_server.panda.requests["task/submit"]
    # bounded: with the ownership check broken, each try would wait on the other task (running,
    # aborted) without end; this way it fails within a minute, on the asserts below
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=2, "
                  f"retry_delay=timedelta(0), timeout=20, {FAST})",
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


def test_adopt_a_task_jedi_has_not_refined_yet(panda_server, hook, capfd):
    """Until JEDI refines it the real server lists the task under a random name and owner
    ``tobeset``: the lookup misses it, PanDA answers the submission "duplicate", and if_exists still
    decides (here: adopt), as when the lookup finds the task."""
    params = params_with_outcomes(panda_server, ["hang"], "adoptyoung")
    other = hook.submit_task(params)
    wait_status(hook, other, {"running"})
    panda_server.sim.registered(other, reads=3)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, if_exists='adopt', "
                  f"wait_for_completion=False, {FAST})", params=repr(params))
    assert run.states == {"submit": "success"} and run.xcom("submit") == other
    assert len(named(panda_server, params["taskName"])) == 1
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
                           timeout=10, on_timeout='kill', {FAST})
        """, params=repr(params))  # try 2 must reach done within its own timeout, on a busy machine too
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


# Airflow's execution_timeout takes SIGALRM in dag.test()'s process, which silences pytest-timeout's
# signal method (a hang here once went 15 minutes without a traceback): watch from a thread instead.
@pytest.mark.timeout(300, method="thread")
def test_a_crash_between_submit_and_storing_the_id_leaves_one_task(panda_server, capfd):
    """The first try is cut off after the server accepted the task and before the answer arrived
    (execution_timeout during a slow answer); the retry finds the task by name and its owner key."""
    params = params_with_outcomes(panda_server, ["done"], "afcrash")
    name = params["taskName"]
    panda_server.panda.submit_delays[name.replace(".", r"\.")] = 60.0  # cut off long before the answer
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, retry_delay=timedelta(0),
                           execution_timeout=timedelta(seconds=120), on_execute_callback=$cb, {FAST})
        """, params=repr(params),
        cb=f"lambda ctx: __import__('dag_callbacks').cut_first_try_when(ctx, {name!r}, running=False)")
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


#: Airflow >= 3.3 keeps the jediTaskID in the task state store (AIP-103); older releases look it up by name.
STATE_STORE = tuple(int(p) for p in __import__("airflow").__version__.split(".")[:2]) >= (3, 3)


def test_airflow_retry_after_a_kill_refuses_a_task_panda_cannot_reexecute(panda_server, conn_env, capfd):
    """PanDA re-executes a name only for uniqueTaskName tasks of type 'anal': a production task's
    name submitted again makes a second task. The retry says so and submits nothing."""
    conn_env(user="prod")
    params = params_with_outcomes(panda_server, ["hang", "done"], "prodabort", taskType="prod")
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, retries=2, retry_delay=timedelta(0),
                           timeout=1, on_timeout='kill', {FAST})
        """, params=repr(params))
    [task] = named(panda_server, params["taskName"])  # no second task
    assert run.states == {"submit": "failed"} and run.tries("submit") == 2  # no Airflow retry spent on it
    assert wait_status_of(panda_server, task) == "aborted" and task.attempt == 0
    out = "".join(capfd.readouterr())
    assert f"PanDA task {task.task_id} cannot be re-executed" in out and "taskType 'prod'" in out


def test_reexecute_when_asked_refuses_a_task_panda_cannot_reexecute(panda_server, conn_env, capfd):
    from airflow_provider_panda.hooks.panda import PandaHook

    conn_env(user="prod")
    params = params_with_outcomes(panda_server, ["done"], "prodreexec", taskType="prod")
    other = PandaHook().submit_task(params)
    wait_status(PandaHook(), other, {"done"})
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, if_exists='reexecute', {FAST})",
                  params=repr(params))
    [task] = named(panda_server, params["taskName"])
    assert run.states == {"submit": "failed"} and task.task_id == other and task.attempt == 0
    assert f"PanDA task {other} cannot be re-executed" in "".join(capfd.readouterr())


def wait_status_of(server, task):
    from conftest import wait_for

    return wait_for(lambda: task.status if task.status in ("aborted", "done", "failed") else None)


def test_a_new_try_under_a_new_name_submits_a_new_task(panda_server, capfd):
    """README: a task instance runs again under a new name (``{{ ti.try_number }}``). The id kept
    for the earlier try (task state store on Airflow >= 3.3) belongs to the old name: not reused."""
    tag = uuid.uuid4().hex[:8]
    panda_server.sim.add_rule(rf"user\.alice\.rename\.{tag}\.1$", ["failed"])
    params = task_params("rename", taskName=f"user.alice.rename.{tag}." + "{{ ti.try_number }}")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, retries=1, retry_delay=timedelta(0), "
                  f"{FAST})", params=repr(params))
    tasks = sorted((t for t in panda_server.sim.tasks.values() if f".rename.{tag}." in t.name), key=lambda t: t.name)
    assert [(t.name[-1], t.status, t.attempt) for t in tasks] == [("1", "failed", 0), ("2", "done", 0)]
    assert run.states == {"submit": "success"} and run.xcom("submit") == tasks[1].task_id


@pytest.mark.skipif(not STATE_STORE, reason="the task state store is new in Airflow 3.3")
def test_a_stored_id_without_a_name_is_still_trusted(panda_server, hook):
    """Entries written before the name was kept hold the id alone: they still say "my task"."""
    params = params_with_outcomes(panda_server, ["done"], "oldentry")
    mine = hook.submit_task(params)
    wait_status(hook, mine, {"done"})
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, {FAST},
                           on_execute_callback=lambda ctx: ctx['task_state_store'].set('panda_jedi_task_id', {mine}))
        """, params=repr(params))
    assert run.states == {"submit": "success"} and run.xcom("submit") == mine
    [task] = named(panda_server, params["taskName"])
    assert task.attempt == 0


def test_a_duplicate_answer_to_a_resend_is_checked_for_ownership(panda_server, hook, capfd):
    """The first submit gets no answer and did nothing; meanwhile another submitter's task (only in
    DEFT, so no lookup lists it) took the name. The resend is answered "duplicate" with that task's
    id: the operator must not take it for the one it sent."""
    params = params_with_outcomes(panda_server, ["done"], "resentdup")
    panda_server.sim.clock.freeze(True)  # the other task stays `registered`: invisible to lookups
    other = hook.submit_task(params)
    panda_server.sim.after_reads(other, 1, "done")  # JEDI has it at the first status read
    panda_server.panda.faults.append("502@task/submit")  # no answer, nothing done
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST})", params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    assert run.xcom("submit", "jedi_task_id") is None  # never took it as its own
    [task] = named(panda_server, params["taskName"])
    assert task.task_id == other and task.attempt == 0
    assert f"is already held by PanDA task {other}" in "".join(capfd.readouterr())


def test_a_duplicate_answer_to_a_first_submission_is_checked_for_ownership(panda_server, hook, capfd):
    """Another submitter's task JEDI has not refined yet (listed under a random name, owner
    ``tobeset``) holds the name: the lookup misses it, and PanDA answers the first submission
    "duplicate" with that task's id. It is not this instance's task: if_exists='fail' fails the run
    (taken as its own, the run would succeed at once: wait_for_completion=False), nothing is
    commanded, and the task is never recorded as this instance's."""
    params = params_with_outcomes(panda_server, ["hang"], "firstdup")
    other = hook.submit_task(params)
    wait_status(hook, other, {"running"})
    panda_server.sim.registered(other, reads=3)  # the lookup by name (and the next reads) miss it
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, wait_for_completion=False, {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "failed"} and run.tries("submit") == 1
    assert run.xcom("submit", "jedi_task_id") is None and run.xcom("submit") is None  # never taken as its own
    [task] = named(panda_server, params["taskName"])
    assert task.task_id == other and task.attempt == 0 and task.status == "running"  # untouched
    assert f"is already held by PanDA task {other} (running)" in "".join(capfd.readouterr())


def test_an_adopted_task_aborted_during_the_wait_is_not_reexecuted(panda_server, hook):
    """The one re-execution after an abort seen while waiting is for this instance's own earlier
    task (its cancel_on_kill racing this try); an adopted task aborted by its owner fails the run."""
    import threading

    params = params_with_outcomes(panda_server, ["hang"], "adoptabort")
    other = hook.submit_task(params)
    wait_status(hook, other, {"running"})
    reads = panda_server.panda.requests

    def kill_once_waited_on() -> None:
        start = reads["task/get_status"]
        wait_for(lambda: reads["task/get_status"] >= start + 3, 120)  # the adopted task is being waited on
        hook.kill_task(other)

    killer = threading.Thread(target=kill_once_waited_on, daemon=True)
    killer.start()
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, if_exists='adopt', timeout=60, "
                  f"{FAST})", params=repr(params))  # a re-executed "hang" task would time the run out
    killer.join(10)
    assert run.states == {"submit": "failed"}
    [task] = named(panda_server, params["taskName"])
    assert task.status == "aborted" and task.attempt == 0  # never re-executed
