"""Operators and the sensor in real DAG runs (``dag.test()``) against the local PanDA server."""

from __future__ import annotations

import time

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes, task_params, wait_status

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaInputError

FAST = "poll_interval=0.05"
#: Airflow 3.1's own BaseSensorOperator fails in reschedule mode from the second poke on
#: (get_first_reschedule_date gives text; sensor.py run_duration subtracts it from a datetime).
RESCHEDULE = pytest.param("reschedule", marks=pytest.mark.skipif(
    tuple(int(p) for p in __import__("airflow").__version__.split(".")[:2]) < (3, 2),
    reason="Airflow 3.1's BaseSensorOperator fails in reschedule mode (an Airflow bug)"))


def tasks_named(server, name):
    return [t for t in server.sim.tasks.values() if t.name == name]


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


@pytest.mark.parametrize("deferrable", [False, True])
def test_submit_and_wait_succeeds(panda_server, deferrable):
    params = task_params("op")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST}, deferrable={deferrable})",
                  params=repr(params))
    assert run.states == {"submit": "success"}
    [task] = tasks_named(panda_server, params["taskName"])
    assert run.xcom("submit") == task.task_id == run.xcom("submit", "jedi_task_id")
    url = f"{panda_server.url}/monitor/task/{task.task_id}/"
    assert run.xcom("submit", "panda_monitor_url") == url
    assert run.xcom("submit", "_link_PandaTaskLink") == url
    assert task.status == "done"


def test_submit_without_waiting_returns_at_once(panda_server):
    params = params_with_outcomes(panda_server, ["hang"], "nowait")
    run = run_dag("SubmitTaskOperator(task_id='submit', task_params=$params, wait_for_completion=False)",
                  params=repr(params))
    assert run.states == {"submit": "success"}
    assert tasks_named(panda_server, params["taskName"])[0].status != "done"


def test_task_params_from_a_json_template_file(panda_server, tmp_path):
    import os

    folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    name = f"tpl_{os.urandom(4).hex()}.json"
    params = task_params("tpl")
    params["taskName"] = params["taskName"] + ".{{ ds_nodash }}"
    with open(os.path.join(folder, name), "w") as handle:
        import json

        json.dump(params, handle)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params='{name}', {FAST})")
    assert run.states == {"submit": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name.startswith(params["taskName"][:-16])]
    assert "{{" not in task.name and task.name[-8:].isdigit()


@pytest.mark.parametrize("outcome", ["failed", "broken", "exhausted", "finished"])
def test_failing_final_status_fails_with_explanation(panda_server, capfd, outcome):
    params = params_with_outcomes(panda_server, [outcome], "fail")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, {FAST})", params=repr(params))
    assert run.states == {"submit": "failed"}
    out = "".join(capfd.readouterr())
    [task] = tasks_named(panda_server, params["taskName"])
    assert f"PanDA task {task.task_id} ended {outcome}" in out
    assert f"/monitor/task/{task.task_id}/" in out
    if outcome in ("failed", "finished"):
        assert "jobs failed" in out and "pilotErrorCode 1305" in out


def test_partial_success_is_allowed_when_asked(panda_server):
    params = params_with_outcomes(panda_server, ["finished"], "partial")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, allow_partial=True, {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "success"}


@pytest.mark.parametrize("deferrable", [False, True])
def test_auto_retries_end_green_after_exactly_two_panda_retries(panda_server, capfd, deferrable):
    params = params_with_outcomes(panda_server, ["failed", "failed", "done"], "auto")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=2, {FAST}, "
                  f"deferrable={deferrable})", params=repr(params))
    assert run.states == {"submit": "success"}
    [task] = tasks_named(panda_server, params["taskName"])
    assert task.attempt == 2 and task.status == "done"
    out = "".join(capfd.readouterr())
    assert "automatic retry 1 of 2" in out and "automatic retry 2 of 2" in out


def test_auto_retries_run_out(panda_server):
    params = params_with_outcomes(panda_server, ["failed", "failed", "done"], "auto1")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=1, {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "failed"}
    assert tasks_named(panda_server, params["taskName"])[0].attempt == 1


def test_auto_retry_with_new_params(panda_server):
    params = params_with_outcomes(panda_server, ["failed", "done"], "autonew")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=1, "
                  f"retry_new_params={{'ramCount': 8000}}, {FAST})", params=repr(params))
    assert run.states == {"submit": "success"}
    assert tasks_named(panda_server, params["taskName"])[0].params["ramCount"] == 8000


@pytest.mark.parametrize("action,final", [("kill", "aborted"), ("finish", "done")])
def test_timeout_kills_or_finishes_the_task(panda_server, capfd, action, final):
    params = params_with_outcomes(panda_server, ["hang"], "tmo")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, timeout=0.5, on_timeout='{action}',"
                  f" {FAST})", params=repr(params))
    assert run.states == {"submit": "failed"}
    [task] = tasks_named(panda_server, params["taskName"])
    from airflow_provider_panda.hooks.panda import PandaHook

    assert wait_status(PandaHook(), task.task_id, {final}) == final
    assert "after 0.5 s" in "".join(capfd.readouterr())


# Airflow's execution_timeout takes SIGALRM in dag.test()'s process, which silences pytest-timeout's
# signal method (a hang here once went 15 minutes without a traceback): watch from a thread instead.
@pytest.mark.timeout(300, method="thread")
def test_airflow_retry_after_a_lost_worker_reattaches(panda_server, capfd):
    """The first try is cut off by Airflow's task timeout while it waits on its running task (at
    that moment, not after a fixed second: a 1 s execution_timeout once expired before a loaded
    machine had even submitted); the retry finds the same task and, told to, it runs on to done."""
    params = params_with_outcomes(panda_server, ["hang"], "crash")
    name = params["taskName"]
    run = run_dag(f"""\
        SubmitTaskOperator(task_id='submit', task_params=$params, {FAST}, retries=1, cancel_on_kill=False,
                           retry_delay=timedelta(seconds=0), execution_timeout=timedelta(seconds=120),
                           on_execute_callback=$cb)
        """, params=repr(params),
        cb=f"lambda ctx: __import__('dag_callbacks').cut_first_try_then_finish(ctx, {name!r})")
    assert run.states == {"submit": "success"} and run.tries("submit") == 2
    assert len(tasks_named(panda_server, name)) == 1
    assert "Reattached to PanDA task" in "".join(capfd.readouterr())


def test_retry_operator(panda_server, hook):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["failed", "done"], "retryop"))
    wait_status(hook, task_id, {"failed"})
    run = run_dag(f"RetryTaskOperator(task_id='retry', jedi_task_id='{task_id}', wait_for_completion=True, {FAST})")
    assert run.states == {"retry": "success"} and run.xcom("retry") == task_id
    assert hook.get_task_status(task_id) == "done"
    again = run_dag(f"RetryTaskOperator(task_id='retry', jedi_task_id={task_id})")
    assert again.states == {"retry": "success"}  # done already: nothing to retry is not an error


def test_retry_operator_rejection_fails_with_code(panda_server, hook, capfd):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "retryrej"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.force(task_id, status="broken")
    run = run_dag(f"RetryTaskOperator(task_id='retry', jedi_task_id={task_id})")
    assert run.states == {"retry": "failed"}
    assert "retry rejected with code 4" in "".join(capfd.readouterr())


def test_kill_operator_waits_for_aborted_and_accepts_already_killed(panda_server, hook):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "killop"))
    wait_status(hook, task_id, {"running"})
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id}, wait_for_completion=True, {FAST})")
    assert run.states == {"kill": "success"} and run.xcom("kill") == task_id
    assert hook.get_task_status(task_id) == "aborted"
    again = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id})")
    assert again.states == {"kill": "success"} and again.xcom("kill") == task_id


@pytest.mark.parametrize("operator,final", [("KillTaskOperator", {"aborted"}),
                                            ("FinishTaskOperator", {"done", "finished", "failed"})])
def test_terminate_operator_waits_past_the_status_its_command_found(panda_server, hook, operator, final):
    """PanDA only queues kill and finish (JEDI's TaskCommando acts later): the first poll still reads
    the old ``exhausted``, which must not end the wait as a failure."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["exhausted"], "exhstop"))
    wait_status(hook, task_id, {"exhausted"})
    run = run_dag(f"{operator}(task_id='stop', jedi_task_id={task_id}, wait_for_completion=True, {FAST})")
    assert run.states == {"stop": "success"} and run.xcom("stop") == task_id
    assert hook.get_task_status(task_id) in final


@pytest.mark.parametrize(("operator", "end", "state"), [
    ("KillTaskOperator", "aborted", "deft"), ("KillTaskOperator", "aborted", "unrefined"),
    ("FinishTaskOperator", "failed", "unrefined")])
def test_command_on_a_task_jedi_has_not_refined_yet(panda_server, hook, capfd, operator, end, state):
    """Right after submission only DEFT knows the task ("deft": not found), then JEDI has it unrefined
    (``registered``, owner ``tobeset``): either way the server answers its owner's command "not the
    task owner". The operator waits until JEDI has refined the task, then sends the command."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "young"))
    wait_status(hook, task_id, {"running"})
    if state == "deft":
        panda_server.sim.hide(task_id, reads=3)
    else:
        panda_server.sim.registered(task_id, reads=3)
    run = run_dag(f"{operator}(task_id='stop', jedi_task_id={task_id}, wait_for_completion=True, "
                  f"poll_interval=0.05)")
    assert run.states == {"stop": "success"} and run.xcom("stop") == task_id
    assert hook.get_task_status(task_id) == end  # a hard finish cancels the hanging jobs
    said = "is not visible yet" if state == "deft" else "is registered: JEDI has not refined it yet"
    assert f"PanDA task {task_id} {said}" in "".join(capfd.readouterr())


def test_command_on_a_task_jedi_never_refines_is_sent_after_the_grace(panda_server, hook, capfd):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "stuckreg"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.registered(task_id, reads=1_000_000)
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id}, not_found_grace=0.3, {FAST})")
    assert run.states == {"kill": "failed"}
    assert api.MESSAGE_TASK_OWNER in "".join(capfd.readouterr())  # the server's answer, not a wait's
    panda_server.sim.registered(task_id, reads=0)
    assert hook.get_task_status(task_id) == "running"


def test_command_on_a_refined_registered_task_is_sent_at_once(panda_server, hook, capfd):
    """A refined task reads ``registered`` too while it waits for its parent or input; its owner is
    set, the server takes its owner's kill: no wait for a refinement that already happened."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "onhold"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.registered(task_id, reads=1_000_000, refined=True)
    started = time.monotonic()
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id}, {FAST})")  # not_found_grace=600
    assert run.states == {"kill": "success"} and time.monotonic() - started < 120
    assert "has not refined it yet" not in "".join(capfd.readouterr())
    panda_server.sim.registered(task_id, reads=0)
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"


def test_command_on_an_unknown_task_fails_after_the_grace(panda_server):
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id=999999999, not_found_grace=0.3, {FAST})")
    assert run.states == {"kill": "failed"}


def test_kill_operator_on_someone_elses_task_fails(panda_server, conn_env):
    from airflow_provider_panda.hooks.panda import PandaHook

    bob = PandaHook(conn_env("panda_bob", user="other"))
    task_id = bob.submit_task(params_with_outcomes(panda_server, ["hang"], "bobs"))
    wait_status(bob, task_id, {"running"})
    run = run_dag(f"KillTaskOperator(task_id='kill', jedi_task_id={task_id})")
    assert run.states == {"kill": "failed"}
    assert bob.get_task_status(task_id) == "running"


def test_finish_operator_soft(panda_server, hook):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "finop"))
    wait_status(hook, task_id, {"running"})
    run = run_dag(f"FinishTaskOperator(task_id='finish', jedi_task_id={task_id}, soft=True, "
                  f"wait_for_completion=True, {FAST})")
    assert run.states == {"finish": "success"} and run.xcom("finish") == task_id
    assert hook.get_task_status(task_id) == "done"  # its jobs all completed


def test_file_recovery_operator(panda_server, hook):
    task_id = hook.submit_task(task_params("recop"))
    wait_status(hook, task_id, {"done"})
    run = run_dag(f"FileRecoveryOperator(task_id='recover', jedi_task_id={task_id}, dry_run=True)")
    assert run.states == {"recover": "success"}
    assert run.xcom("recover").startswith(panda_server.url + "/cache/jedilog/lost_file_recovery.")
    assert panda_server.sim.recovery_requests[-1] == {"task_id": task_id, "dry_run": True, "user": "Alice Analyst"}


@pytest.mark.parametrize("mode", ["poke", RESCHEDULE, "deferrable"])
def test_sensor_modes(panda_server, hook, capfd, mode):
    """The task is running when the sensor starts and invisible for its first reads: the sensor
    must poke (or poll) several times, see the change, and succeed only on done."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "sens"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.hide(task_id, reads=2)
    panda_server.sim.after_reads(task_id, reads=3, status="done")
    args = "deferrable=True" if mode == "deferrable" else f"mode='{mode}'"
    run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id='{task_id}', poke_interval=0.1, timeout=60, {args})")
    assert run.states == {"wait": "success"}
    assert hook.get_task_status(task_id) == "done"
    out = "".join(capfd.readouterr())
    assert "is not visible yet" in out and "-> running" in out and "-> done" in out


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_sensor_fails_fast_on_a_failure_status(panda_server, hook, capfd, mode):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["broken"], "sensfail"))
    args = "deferrable=True" if mode == "deferrable" else "mode='poke'"
    run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id={task_id}, poke_interval=0.1, timeout=300, {args})")
    assert run.states == {"wait": "failed"}
    assert f"PanDA task {task_id} ended broken" in "".join(capfd.readouterr())


def test_sensor_on_a_pipeline_of_submit_then_wait(panda_server):
    params = task_params("pipe")
    run = run_dag("""\
        submit = SubmitTaskOperator(task_id='submit', task_params=$params, wait_for_completion=False)
        wait = TaskStatusSensor(task_id='wait', jedi_task_id="{{ ti.xcom_pull('submit') }}", poke_interval=0.1,
                                timeout=300, deferrable=True)
        submit >> wait
        """, params=repr(params))
    assert run.states == {"submit": "success", "wait": "success"}


def test_bad_arguments_fail_at_parse_time():
    from airflow_provider_panda.operators import SubmitTaskOperator
    from airflow_provider_panda.sensors import TaskStatusSensor

    with pytest.raises(PandaInputError, match="unknown PanDA task status"):
        SubmitTaskOperator(task_id="x", task_params={}, success_statuses=("donee",))
    with pytest.raises(PandaInputError, match="poll_interval"):
        SubmitTaskOperator(task_id="x", task_params={}, poll_interval=0)
    with pytest.raises(PandaInputError, match="on_timeout"):
        SubmitTaskOperator(task_id="x", task_params={}, on_timeout="explode")
    with pytest.raises(PandaInputError, match="auto_retries"):
        SubmitTaskOperator(task_id="x", task_params={}, auto_retries=-1)
    with pytest.raises(PandaInputError, match="both success and failure"):
        TaskStatusSensor(task_id="x", jedi_task_id=1, success_statuses=("done",), failure_statuses=("done",))
    with pytest.warns(DeprecationWarning, match="target_statuses"):
        sensor = TaskStatusSensor(task_id="x", jedi_task_id=1, target_statuses=("done", "finished"))
    assert sensor.success_statuses == ("done", "finished")
    assert TaskStatusSensor(task_id="x", jedi_task_id=1, poll_interval=7).poke_interval == 7  # one vocabulary


def test_on_kill_kills_the_panda_task(panda_server, hook):
    from airflow_provider_panda.operators import SubmitTaskOperator

    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "onkill"))
    wait_status(hook, task_id, {"running"})
    operator = SubmitTaskOperator(task_id="x", task_params={})
    operator._jedi_task_id = task_id
    operator.on_kill()
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"
    keep = SubmitTaskOperator(task_id="y", task_params={}, cancel_on_kill=False)
    other = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "keep"))
    wait_status(hook, other, {"running"})
    keep._jedi_task_id = other
    keep.on_kill()
    assert hook.get_task_status(other) == "running"


def test_on_kill_kills_a_task_jedi_has_not_refined_yet(panda_server, hook):
    """Marked failed seconds after its submission: the server refuses the owner's kill ("not the task
    owner") until JEDI has refined the task, so on_kill tries again within Airflow's SIGTERM grace."""
    from airflow_provider_panda.operators import SubmitTaskOperator

    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "onkillyoung"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.registered(task_id, reads=2)  # the owner check of two kills sees it unrefined
    operator = SubmitTaskOperator(task_id="x", task_params={})
    operator._jedi_task_id = task_id
    operator.on_kill()
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"


@pytest.mark.parametrize("mode", ["poke", RESCHEDULE, "deferrable"])
def test_sensor_not_found_grace_expires_in_every_mode(panda_server, capfd, mode):
    """A task that never appears fails the sensor after the grace, also when every poke is a new
    process (reschedule) and in the triggerer: the grace is not restarted at each poke."""
    args = "deferrable=True" if mode == "deferrable" else f"mode='{mode}'"
    # timeout bounded: a grace restarted at each poke never expires, and the sensor's own timeout (a
    # different error) must end that run fast
    run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id=987654321, poke_interval=0.3, timeout=120, "
                  f"not_found_grace=2, {args})")
    assert run.states == {"wait": "failed"}
    assert "is not known to the server" in "".join(capfd.readouterr())


def test_deferred_sensor_times_out(panda_server, hook, capfd):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "senstmo"))
    run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id={task_id}, poke_interval=0.1, timeout=1, "
                  "deferrable=True)")
    assert run.states == {"wait": "failed"}
    assert hook.get_task_status(task_id) == "running"  # the sensor never touches the task


def test_timeout_fail_leaves_the_task_running(panda_server, hook, capfd):
    params = params_with_outcomes(panda_server, ["hang"], "tmofail")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, timeout=0.5, on_timeout='fail', {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "failed"}
    [task] = tasks_named(panda_server, params["taskName"])
    assert hook.get_task_status(task.task_id) == "running"
    assert "after 0.5 s. Monitor" in "".join(capfd.readouterr())


def test_parent_task_id_is_sent_and_checked(panda_server, hook):
    parent = hook.submit_task(task_params("parent"))
    params = task_params("child")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, parent_task_id='{parent}', {FAST})",
                  params=repr(params))
    assert run.states == {"submit": "success"}
    [child] = tasks_named(panda_server, params["taskName"])
    assert child.parent == parent and hook.get_task_info(child.task_id)["parent_tid"] == parent
    orphan = task_params("orphan")
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, parent_task_id=987654321, {FAST})",
                  params=repr(orphan))
    assert run.states == {"submit": "failed"} and not tasks_named(panda_server, orphan["taskName"])


@pytest.mark.parametrize("mode", ["operator", "poke", RESCHEDULE])
def test_waits_survive_an_outage(panda_server, conn_env, hook, capfd, mode):
    """30 status reads in a row answered 503 (a 10-minute outage at a 20 s interval), each failing
    at once (max_retries=0): the wait keeps going and ends with the task, in every sync mode.
    The deferred wait's outage test is in test_trigger.py."""
    conn_env(max_retries=0)
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["done"], f"outage{mode}"))
    panda_server.panda.faults.extend(["503@task/get_status"] * 30)
    if mode == "operator":
        run = run_dag(f"RetryTaskOperator(task_id='wait', jedi_task_id={task_id}, wait_for_completion=True, "
                      f"not_found_grace=600, {FAST})")
    else:
        run = run_dag(f"TaskStatusSensor(task_id='wait', jedi_task_id={task_id}, poke_interval=0.05, timeout=600, "
                      f"mode='{mode}')")
    assert run.states == {"wait": "success"}
    assert not [f for f in panda_server.panda.faults if f.endswith("@task/get_status")]  # the outage was served
    assert "HTTP 503" in "".join(capfd.readouterr())


# --- killing a running task instance: the id execute recorded, cancel_on_kill through the deferral ----


def _running_task(server, name: str, reads: int = 2):
    """The task named ``name`` once it runs and its waiter has read it ``reads`` more times (so the
    operator has submitted it, recorded its id and is waiting on it)."""
    from conftest import wait_for

    task = wait_for(lambda: next((t for t in list(server.sim.tasks.values())
                                  if t.name == name and t.status == "running"), None), 60)
    start = task.reads
    wait_for(lambda: task.reads >= start + reads, 60)
    return task


def _in_thread(script):
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            script()
        except BaseException as exc:  # reported by the test after the run
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.mark.timeout(400, method="thread")
@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_sigterm_during_the_wait_kills_the_task_execute_submitted(panda_server, hook, cancel_on_kill):
    """Airflow's task runner answers SIGTERM (a task marked failed or success, cleared, or killed
    while it runs) with the operator's ``on_kill``; here the real signal reaches the real handler
    while the operator waits. The id it kills is the one ``execute`` recorded when it submitted,
    nothing set by hand: with ``cancel_on_kill`` the task is aborted (and the wait ends on it), without
    it the task runs on (then the test lets it finish). Bounded: the operator gives up after 120 s."""
    import os
    import signal

    from conftest import wait_for

    params = params_with_outcomes(panda_server, ["hang"], "sigterm")
    pid = os.getpid()

    def kill_the_try() -> None:
        task = _running_task(panda_server, params["taskName"])
        handler = signal.getsignal(signal.SIGTERM)
        if getattr(handler, "__module__", "") != "airflow.sdk.execution_time.task_runner":
            raise AssertionError(f"Airflow's SIGTERM handler is not installed ({handler!r}): no signal sent")
        kills = panda_server.panda.requests["task/kill"]
        os.kill(pid, signal.SIGTERM)
        if not cancel_on_kill:  # on_kill ran and left it: no kill sent, still running reads later; let it end
            start = task.reads
            wait_for(lambda: task.reads >= start + 3, 60)
            assert (task.status, panda_server.panda.requests["task/kill"]) == ("running", kills)
            panda_server.sim.force(task.task_id, status="done")

    thread = _in_thread(kill_the_try)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, timeout=120, "
                  f"cancel_on_kill={cancel_on_kill}, {FAST})", params=repr(params))
    thread.join(200)
    assert not thread.errors, thread.errors
    [task] = tasks_named(panda_server, params["taskName"])
    if cancel_on_kill:
        assert task.status in ("toabort", "aborted"), task.status  # killed, not timed out
        assert run.states == {"submit": "failed"}
    else:
        assert (task.status, run.states) == ("done", {"submit": "success"})


def _deferred_trigger(task_id: int):
    """The trigger a deferred task instance waits with, as the triggerer loads it: its row in
    Airflow's ``trigger`` table (classpath and encrypted kwargs)."""
    from airflow.models.trigger import Trigger
    from airflow.sdk.module_loading import import_string
    from airflow.utils.session import create_session

    with create_session() as session:
        for row in session.query(Trigger).all():
            if row.classpath.endswith("PandaTaskTrigger") and int(row.kwargs["jedi_task_id"]) == task_id:
                return import_string(row.classpath)(**row.kwargs)
    return None


async def _kill_through_the_triggerer(trigger, task) -> None:
    """Run ``trigger`` in Airflow's own TriggerRunner and cancel it as a user action does (mark,
    clear), once it has read the task: Airflow >= 3.3 then calls the trigger's ``on_kill``."""
    import asyncio
    import contextlib

    from airflow.jobs.triggerer_job_runner import TriggerRunner

    runner = TriggerRunner()
    runner.triggers[1] = {"task": asyncio.create_task(runner.run_trigger(1, trigger)), "name": "panda-wait",
                          "events": 0, "is_watcher": False}
    from airflow_provider_panda.triggers.poller import _REGISTRY

    loop = id(asyncio.get_running_loop())
    while not any(key[0] == loop and task.task_id in poller.readings for key, poller in list(_REGISTRY.items())):
        assert not runner.triggers[1]["task"].done(), "the trigger ended before it was killed"
        await asyncio.sleep(0.02)  # until this trigger has read the task (its poller, on this loop)
    runner.to_cancel.append(1)
    await runner.cancel_triggers()
    with contextlib.suppress(asyncio.CancelledError):
        await runner.triggers[1]["task"]


@pytest.mark.skipif(tuple(int(p) for p in __import__("airflow").__version__.split(".")[:2]) < (3, 3),
                    reason="Airflow calls a trigger's on_kill from 3.3 on")
@pytest.mark.timeout(400, method="thread")
@pytest.mark.parametrize("cancel_on_kill", [True, False])
def test_a_deferred_operator_kills_its_task_only_with_cancel_on_kill(panda_server, hook, cancel_on_kill):
    """The deferred wait: the operator defers (a real DAG run), the trigger it deferred with is
    loaded from Airflow's trigger table as the triggerer loads it, run in Airflow's TriggerRunner and
    cancelled by a user action, which calls its ``on_kill``. With ``cancel_on_kill=True`` the PanDA
    task is aborted (and the run's own wait ends on it); with False it runs on (then the test lets it
    finish). Bounded: the operator gives up after 120 s."""
    import asyncio

    from conftest import wait_for

    params = params_with_outcomes(panda_server, ["hang"], "defkill")

    def kill_the_deferred_wait() -> None:
        task = _running_task(panda_server, params["taskName"])
        trigger = wait_for(lambda: _deferred_trigger(task.task_id), 60)
        kills = panda_server.panda.requests["task/kill"]
        asyncio.run(_kill_through_the_triggerer(trigger, task))
        if not cancel_on_kill:  # on_kill ran and left it: no kill sent, still running reads later; let it end
            start = task.reads
            wait_for(lambda: task.reads >= start + 3, 60)
            assert (task.status, panda_server.panda.requests["task/kill"]) == ("running", kills)
            panda_server.sim.force(task.task_id, status="done")

    thread = _in_thread(kill_the_deferred_wait)
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, timeout=120, deferrable=True, "
                  f"cancel_on_kill={cancel_on_kill}, {FAST})", params=repr(params))
    thread.join(200)
    assert not thread.errors, thread.errors
    [task] = tasks_named(panda_server, params["taskName"])
    if cancel_on_kill:
        assert task.status in ("toabort", "aborted"), task.status  # killed by the trigger's on_kill
        assert run.states == {"submit": "failed"}
    else:
        assert (task.status, run.states) == ("done", {"submit": "success"})
