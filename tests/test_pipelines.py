"""The seams of composed pipelines: a command (file recovery, retry) and then a wait downstream.

PanDA only queues a command; JEDI acts later, so a wait started right after it reads the task's old
status first. Here the local server's clock is held from the command on (JEDI "has not acted yet")
until the downstream wait has read the old status several times; only then is it let go. A wait
that takes the old status for the outcome fails the run; one that looks past it succeeds once the
task really ends. Each runs as a real DAG (``dag.test()``) in every sensor mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes, wait_status

from airflow_provider_panda.exceptions import PandaInputError
from airflow_provider_panda.marks import check_after_command
from airflow_provider_panda.waiting import FAILURE, SUCCESS, StaleMark, TaskWatch, WaitSpec

LOG = logging.getLogger("test")
RESCHEDULE = pytest.param("reschedule", marks=pytest.mark.skipif(
    tuple(int(p) for p in __import__("airflow").__version__.split(".")[:2]) < (3, 2),
    reason="Airflow 3.1's BaseSensorOperator fails in reschedule mode (an Airflow bug)"))


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def sensor(task_id: str, mode: str, extra: str = "") -> str:
    how = "deferrable=True" if mode == "deferrable" else f"mode='{mode}'"
    return (f"TaskStatusSensor(task_id='{task_id}', jedi_task_id=$tid, poke_interval=0.2, timeout=240, "
            f"not_found_grace=120, {how}{extra})")


@contextmanager
def held_after(server, command: str, reads: int = 3) -> Iterator[None]:
    """From the moment the server accepts ``command`` its clock is held (JEDI does not act), until
    the waits have read the task's details ``reads`` more times (each a reading of the old status
    they had to look past); then it is let go and the task moves on."""
    sim = server.sim
    sim.hold_after.add(command)
    done = threading.Event()

    def release() -> None:
        try:
            while not sim.clock.frozen and not done.is_set():
                time.sleep(0.02)
            start = server.panda.requests["task/get_detailed_info"]
            while server.panda.requests["task/get_detailed_info"] < start + reads and not done.is_set():
                time.sleep(0.02)
        finally:
            sim.hold_after.discard(command)
            sim.clock.freeze(False)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(10)


@pytest.mark.parametrize("mode", ["poke", RESCHEDULE, "deferrable"])
def test_recover_then_wait_again_looks_past_the_old_status(panda_server, hook, mode):
    """FileRecoveryOperator >> TaskStatusSensor: the sensor must not fail on the ``finished`` the
    task still shows while the recovery is queued; it succeeds when the recovered task is done."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["finished", "done"], "recwait"))
    wait_status(hook, task_id, {"finished"})
    sim = panda_server.sim
    with held_after(panda_server, "recover"):
        run = run_dag("recover = FileRecoveryOperator(task_id='recover', jedi_task_id=$tid)\n"
                      f"recover >> {sensor('wait_again', mode)}\n", tid=task_id)
    assert run.states == {"recover": "success", "wait_again": "success"}
    task = sim.tasks[task_id]
    assert (task.recoveries, task.attempt, task.status) == (1, 1, "done")
    mark = run.xcom("recover", "panda_command")
    assert (mark["jedi_task_id"], mark["status"], mark["command"]) == (task_id, "finished", "file recovery")


def test_recovering_a_done_task_does_not_end_the_wait_on_its_interim_finished(panda_server, hook):
    """On the real server a recovery request turns a ``done`` task ``finished`` by a bare UPDATE
    (attemptNr, stateChangeTime, errorDialog unchanged) before JEDI retries it: that ``finished`` is
    not the recovery's outcome either."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["done"], "recdone"))
    wait_status(hook, task_id, {"done"})
    with held_after(panda_server, "recover"):
        run = run_dag("recover = FileRecoveryOperator(task_id='recover', jedi_task_id=$tid)\n"
                      f"recover >> {sensor('wait_again', 'poke')}\n", tid=task_id)
    assert run.states == {"recover": "success", "wait_again": "success"}
    task = panda_server.sim.tasks[task_id]
    assert (task.recoveries, task.attempt, task.status) == (1, 1, "done")


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_retry_then_wait_again_looks_past_the_old_status(panda_server, hook, mode):
    """A sensor fails on ``failed``; RetryTaskOperator (no wait of its own) retries with new
    parameters; a second sensor must wait for the retry's outcome, not end on the old ``failed``."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["failed", "done"], "retrywait"))
    wait_status(hook, task_id, {"failed"})
    with held_after(panda_server, "retry"):
        run = run_dag(f"wait = {sensor('wait', mode)}\n"
                      "retry = RetryTaskOperator(task_id='retry', jedi_task_id=$tid, new_params={'ramCount': 4000}, "
                      "trigger_rule='one_failed')\n"
                      f"wait >> retry >> {sensor('wait_again', mode)}\n", tid=task_id)
    assert run.states == {"wait": "failed", "retry": "success", "wait_again": "success"}
    task = panda_server.sim.tasks[task_id]
    assert (task.attempt, task.status, task.params["ramCount"]) == (1, "done", 4000)


@pytest.mark.parametrize("command", ["retry", "recover"])
def test_a_deferred_wait_is_not_fooled_by_the_shared_pollers_old_status(panda_server, hook, command):
    """JEDI writes the statuses a command leads to with a back-dated modificationTime, so the shared
    poller's change feed stops listing the task and its cache keeps the pre-command status until a
    sweep. The details a wait reads show the command taken (a new attempt); the next cached reading
    is the old status again and must not end the wait: statuses that would end it stay confirmed by
    the details. (Seen on the real server: ``failed -> rerefine -> failed`` ended a deferred wait.)"""
    first = "failed" if command == "retry" else "finished"
    task_id = hook.submit_task(params_with_outcomes(panda_server, [first, "hang"], "backdated"))
    wait_status(hook, task_id, {first})
    sim = panda_server.sim
    sim.backdate_commands = 3600
    send = ("RetryTaskOperator(task_id='send', jedi_task_id=$tid)" if command == "retry" else
            "FileRecoveryOperator(task_id='send', jedi_task_id=$tid)")
    done = threading.Event()

    def end_after_rounds() -> None:
        """Once the new attempt runs, the attempt ends done after 12 more rounds of the poller (two
        sweeps among them, the other rounds answering from the cache: the old status)."""
        requests = panda_server.panda.requests
        while not done.is_set() and not (sim.tasks[task_id].attempt == 1 and sim.tasks[task_id].status == "running"):
            time.sleep(0.02)
        start = requests["task/get_tasks_modified_since"]
        while not done.is_set() and requests["task/get_tasks_modified_since"] < start + 12:
            time.sleep(0.02)
        sim.force(task_id, "done", backdate=3600)

    ender = threading.Thread(target=end_after_rounds, daemon=True)
    ender.start()
    try:
        # let JEDI act once the trigger's poller has the old status in its cache (the sensor's first
        # poke reads the details once, each trigger reading of the old status once more)
        with held_after(panda_server, command, reads=3):
            run = run_dag(f"{send} >> {sensor('wait_again', 'deferrable')}\n", tid=task_id)
    finally:
        done.set()
        ender.join(10)
    assert run.states == {"send": "success", "wait_again": "success"}
    assert sim.tasks[task_id].status == "done"


def test_recovery_operator_waits_for_the_recovered_task(panda_server, hook):
    """FileRecoveryOperator(wait_for_completion=True) waits past the old ``finished`` itself."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["finished", "done"], "recself"))
    wait_status(hook, task_id, {"finished"})
    sim = panda_server.sim
    with held_after(panda_server, "recover"):
        run = run_dag("FileRecoveryOperator(task_id='recover', jedi_task_id=$tid, wait_for_completion=True, "
                      "poll_interval=0.2, deferrable=True)\n", tid=task_id)
    assert run.states == {"recover": "success"}
    assert sim.tasks[task_id].status == "done"
    assert run.xcom("recover").startswith(panda_server.url + "/cache/jedilog/lost_file_recovery.")


def test_kill_then_sensor_waits_for_the_abort(panda_server, hook):
    """Kill an ``exhausted`` task, then a sensor waiting for ``aborted``: the old ``exhausted`` (a
    stop status, which fails a wait) must not end it while JEDI has not acted on the kill."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["exhausted"], "killwait"))
    wait_status(hook, task_id, {"exhausted"})
    with held_after(panda_server, "kill"):
        run = run_dag("KillTaskOperator(task_id='kill', jedi_task_id=$tid) >> "
                      + sensor("aborted", "poke", ", success_statuses=['aborted']") + "\n", tid=task_id)
    assert run.states == {"kill": "success", "aborted": "success"}
    assert panda_server.sim.tasks[task_id].status == "aborted"


def test_automatic_retries_say_why_each_attempt_failed(panda_server, capfd):
    """auto_retries: each failed attempt's reason (the commonest job errors) is in the worker's log
    before the retry, and the final report lists every attempt."""
    params = params_with_outcomes(panda_server, ["failed"], "whyfail")
    run = run_dag("SubmitTaskOperator(task_id='submit', task_params=$params, auto_retries=1, poll_interval=0.2, "
                  "retry_new_params={'ramCount': 3000}, deferrable=True)\n", params=repr(params))
    assert run.states == {"submit": "failed"}
    out = "".join(capfd.readouterr())
    assert "attempt 0 ended failed: 2 of the 2 newest jobs failed: 2 x pilotErrorCode 1305" in out, out[-3000:]
    assert "automatic retry 1 of 1 with {'ramCount': 3000}" in out
    assert "Earlier attempts (1):" in out and "retried with {'ramCount': 3000}" in out


# --- the rule itself ------------------------------------------------------------------------------


INFO = {"attemptNr": 0, "stateChangeTime": datetime(2026, 1, 1, 10), "errorDialog": None}


@pytest.mark.parametrize("change", [{"attemptNr": 1}, {"stateChangeTime": datetime(2026, 1, 1, 11)},
                                    {"errorDialog": "no new files"}], ids=["attempt", "state change", "dialog"])
def test_each_term_of_the_stale_rule_alone_tells_a_new_outcome(change):
    """The real server's retry changes ``stateChangeTime`` alone in some paths; a refused command
    only sets ``errorDialog``: each term on its own must end the staleness."""
    watch = TaskWatch(1, WaitSpec.build(), LOG, stale=StaleMark.of("failed", INFO, "retry"))
    assert watch.observe("failed", dict(INFO)) is None
    assert watch.observe("failed", {**INFO, **change}) == FAILURE


def test_the_grace_counts_from_the_command_not_from_the_wait():
    """A wait that starts long after the command (a sensor downstream, a rescheduled poke) takes the
    old status as the outcome once the grace since the command has passed, not a grace later."""
    old = StaleMark.load({**StaleMark.of("finished", INFO, "file recovery").to_dict(), "sent_at": time.time() - 61})
    assert TaskWatch(1, WaitSpec.build(), LOG, stale=old, not_found_grace=60).observe("finished", INFO) == FAILURE
    fresh = StaleMark.of("finished", INFO, "file recovery")
    assert TaskWatch(1, WaitSpec.build(), LOG, stale=fresh, not_found_grace=60).observe("finished", INFO) is None


def test_the_newest_command_wins():
    first = StaleMark("failed", 0, command="retry", sent_at=100.0)
    second = StaleMark("finished", 1, command="file recovery", sent_at=200.0)
    assert StaleMark.newest(first, None, second) == second and StaleMark.newest(None) is None
    assert StaleMark.load(second.to_dict()) == second


def test_a_wait_for_a_task_to_appear_holds_an_unrefined_task():
    watch = TaskWatch(1, WaitSpec.any(), LOG, until_refined=True, not_found_grace=60)
    assert watch.needs_info("registered") and not watch.needs_info("running")
    assert watch.observe("registered", {"status": "registered", "userName": "tobeset"}) is None
    assert watch.observe("registered", {"status": "registered", "userName": "alice"}) == SUCCESS


def test_after_command_is_checked_before_anything_runs():
    assert check_after_command("recover") == ("recover",)
    assert check_after_command(["a", "b"]) == ("a", "b")
    with pytest.raises(PandaInputError, match="task_id of the Airflow task"):
        check_after_command(42)
    with pytest.raises(PandaInputError, match="panda_command"):
        check_after_command({"jedi_task_id": 1})


def test_a_dry_run_recovery_has_nothing_to_wait_for():
    from airflow_provider_panda.operators import FileRecoveryOperator

    with pytest.raises(PandaInputError, match="nothing to wait"):
        FileRecoveryOperator(task_id="r", jedi_task_id=1, dry_run=True, wait_for_completion=True)


def test_the_example_recovery_pipeline_holds_while_the_recovery_is_queued(panda_server):
    """The example's shape (submit, recover, wait again) on a task whose recovery JEDI takes its time
    over: held as above from the recovery request on."""
    params = params_with_outcomes(panda_server, ["finished", "done"], "exrec")
    sim = panda_server.sim
    with held_after(panda_server, "recover"):
        run = run_dag("submit = SubmitTaskOperator(task_id='submit', task_params=$params, allow_partial=True, "
                      "poll_interval=0.2)\n"
                      "recover = FileRecoveryOperator(task_id='recover', jedi_task_id=submit.output)\n"
                      f"recover >> {sensor('wait_again', 'deferrable').replace('$tid', 'submit.output')}\n",
                      params=repr(params))
    assert run.states == {"submit": "success", "recover": "success", "wait_again": "success"}
    [task] = [t for t in sim.tasks.values() if t.name == params["taskName"]]
    assert (task.recoveries, task.status) == (1, "done")


def test_a_mapped_pipeline_composed_from_the_readme(panda_server):
    """Beyond the examples, as a user composes it: three tasks submitted mapped without waiting, a
    mapped deferred sensor (one fails on ``failed``, one on ``finished``), a mapped retry of every
    one (a done one has nothing to retry), a mapped wait again, and one consumer of every wait's
    outputs. The retried tasks' waits look past their old statuses; nothing is registered."""
    tags = ["ok", "flaky", "lost"]
    run = run_dag("""
        from airflow_provider_panda.builder import PrunTask

        def task(tag):
            return PrunTask(exec="echo hi", out_ds="user.alice.compose." + tag + ".{{ ts_nodash }}",
                            outputs=["out.txt"], n_jobs=2, vo="atlas", site="TEST_SITE", max_attempt=1)

        gen = SubmitTaskOperator.partial(task_id="gen", wait_for_completion=False).expand(
            panda_task=[task(t) for t in $tags])
        wait = TaskStatusSensor.partial(task_id="wait", deferrable=True, poke_interval=0.2).expand(
            jedi_task_id=gen.output)
        retry = RetryTaskOperator.partial(task_id="retry", trigger_rule="all_done").expand(jedi_task_id=gen.output)
        again = TaskStatusSensor.partial(task_id="again", poke_interval=0.2).expand(jedi_task_id=gen.output)
        merge = SubmitTaskOperator(task_id="merge", poll_interval=0.2, panda_task=PrunTask(
            exec="merge.sh %IN", in_ds="{{ ti | panda_outputs('again') }}", outputs=["all.txt"],
            out_ds="user.alice.compose.merged.{{ ts_nodash }}", vo="atlas", site="TEST_SITE"))
        wait >> retry >> again >> merge
    """, tags=repr(tags))
    assert run.states == {
        "gen[0]": "success", "gen[1]": "success", "gen[2]": "success",
        "wait[0]": "success", "wait[1]": "failed", "wait[2]": "failed",
        "retry[0]": "success", "retry[1]": "success", "retry[2]": "success",
        "again[0]": "success", "again[1]": "success", "again[2]": "success", "merge": "success"}
    tasks = {tag: next(t for t in panda_server.sim.tasks.values() if f".compose.{tag}." in t.name) for tag in tags}
    assert {tag: (t.attempt, t.status) for tag, t in tasks.items()} == {
        "ok": (0, "done"), "flaky": (1, "done"), "lost": (1, "done")}
    [merged] = [t for t in panda_server.sim.tasks.values() if ".compose.merged." in t.name]
    inputs = merged.params["dsForIN"].split(",")
    assert [i.split(":")[-1].split(".")[3] for i in inputs] == tags, inputs


def test_retry_policy_recovery_and_outputs_composed(panda_server):
    """The neighbours together, deferred and mapped: three generators under DefaultRetryPolicy (one
    killed for memory on its first attempt: retried with more memory), one consumer of every map
    index's outputs whose task loses files, a file recovery that waits, a sensor after it, and a last
    consumer of the recovered outputs. Nothing is registered or wired by hand."""

    panda_server.sim.add_rule(r"\.recompose\.mem\.", ["failed", "done"])
    panda_server.sim.add_job_errors(r"\.recompose\.mem\.", [{"pilotErrorCode": 1212, "transExitCode": 0,
                                                             "exeErrorCode": 0, "pilotErrorDiag": "out of memory"}])
    tags = ["ok", "mem", "ok2"]
    run = run_dag("""
        from airflow_provider_panda.builder import PrunTask
        from airflow_provider_panda.retry_policy import DefaultRetryPolicy

        def task(tag):
            return PrunTask(exec="gen.sh %RNDM:1", out_ds="user.alice.recompose." + tag + ".{{ ts_nodash }}",
                            outputs=["out.txt"], n_jobs=2, memory=2000, vo="atlas", site="TEST_SITE")

        gen = SubmitTaskOperator.partial(task_id="gen", deferrable=True, poll_interval=0.2,
                                         auto_retry_policy=DefaultRetryPolicy()).expand(
            panda_task=[task(t) for t in $tags])
        merge = SubmitTaskOperator(task_id="merge", deferrable=True, poll_interval=0.2, allow_partial=True,
                                   panda_task=PrunTask(
            exec="merge.sh %IN", in_ds="{{ ti | panda_outputs('gen') }}", outputs=["all.txt"],
            out_ds="user.alice.recompose.lost.{{ ts_nodash }}", vo="atlas", site="TEST_SITE"))
        recover = FileRecoveryOperator(task_id="recover", jedi_task_id=merge.output, wait_for_completion=True,
                                       deferrable=True, poll_interval=0.2)
        check = TaskStatusSensor(task_id="check", jedi_task_id=merge.output, deferrable=True, poke_interval=0.2)
        plot = SubmitTaskOperator(task_id="plot", poll_interval=0.2, panda_task=PrunTask(
            exec="plot.sh %IN", in_ds="{{ ti | panda_outputs('check') }}", outputs=["plot.png"],
            out_ds="user.alice.recompose.plot.{{ ts_nodash }}", vo="atlas", site="TEST_SITE"))
        gen >> merge >> recover >> check >> plot
    """, tags=repr(tags))
    assert run.states == {"gen[0]": "success", "gen[1]": "success", "gen[2]": "success", "merge": "success",
                          "recover": "success", "check": "success", "plot": "success"}, run.states
    sim = panda_server.sim
    gens = {tag: next(t for t in sim.tasks.values() if f".recompose.{tag}." in t.name) for tag in tags}
    assert {tag: (t.attempt, t.params["ramCount"]) for tag, t in gens.items()} == {
        "ok": (0, 2000), "mem": (1, 3000), "ok2": (0, 2000)}
    [attempt] = run.xcom("gen", "panda_attempts", map_index=1)
    assert attempt["retried_with"] == {"ramCount": 3000}
    [merged] = [t for t in sim.tasks.values() if ".recompose.lost." in t.name]
    assert merged.recoveries == 1 and merged.status == "done"
    assert [i.split(":")[-1].split(".")[3] for i in merged.params["dsForIN"].split(",")] == tags
    [plot] = [t for t in sim.tasks.values() if ".recompose.plot." in t.name]
    assert ".recompose.lost." in plot.params["dsForIN"]
