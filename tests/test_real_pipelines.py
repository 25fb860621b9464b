"""The seams of composed pipelines against the real panda-server + JEDI (``REAL_PANDA=1``): a command
(file recovery, retry with new parameters) and then a wait downstream, each a real DAG run
(``dag.test()``), with a stand-in pilot in a background thread running the command's new jobs.

What the real server does after each command (see tests/test_pipelines.py for the same seams on
the local server, held deterministically):

* a file recovery request on a ``done`` task: ``done`` unchanged for a while (the daemon picks the
  request up), then ``finished`` by a bare UPDATE (attemptNr, stateChangeTime, errorDialog
  unchanged), then ``toretry`` -> ``ready`` (attemptNr + 1) -> ``running`` -> ``done``;
* ``task/retry`` with new parameters on a ``failed`` task: the parameters change at once, the
  status a few seconds later (``toincexec``/``rerefine`` -> ``defined`` -> ``ready`` -> ``running``
  -> ``done``), and the attemptNr of the task ends back at 0: only stateChangeTime says it ran again.

A wait downstream that took the old status (or the interim ``finished``) for the outcome would fail
the run; each flow checks the Airflow side (states, the ``panda_command`` mark, what the sensor read)
and the PanDA side (the task's record, its jobs). No fixed sleeps: every wait is for a condition,
with the real backend's deadline (420 s: JEDI's agents run on cycles, on a busy 2-core machine).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime
from typing import Any

import pytest
from airflow_runs import run_dag
from backends import N_JOBS, RealBackend
from test_real_flows import joined, pilot_for, saw_move_to, task_info, wait_status

from airflow_provider_panda import api
from airflow_provider_panda.hooks.panda import PandaHook
from airflow_provider_panda.testing.server import DEFAULT_USERS

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")


@pytest.fixture
def backend(real_server, monkeypatch):
    backend = RealBackend(real_server)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(backend.connection()))
    return backend


@pytest.fixture
def hook(backend):
    return PandaHook()


def sensor(backend: RealBackend, task_id: str, jedi_task_id: int, mode: str) -> str:
    """A TaskStatusSensor polling each second, failing at the real backend's deadline if it regresses."""
    how = "deferrable=True" if mode == "deferrable" else f"mode='{mode}'"
    return (f"TaskStatusSensor(task_id='{task_id}', jedi_task_id={jedi_task_id}, poke_interval=1, "
            f"timeout={backend.timeout:.0f}, {how})")


def with_output(params: dict[str, Any]) -> dict[str, Any]:
    """The task with one output dataset (as tests/test_outputs.py's real-server test): its finished
    files are what a recovery request finds lost (the harness's stand-in Rucio knows no dataset)."""
    name = params["taskName"]
    params["jobParameters"] = [*params["jobParameters"], {
        "type": "template", "param_type": "output", "value": "user.alice.$JEDITASKID._${SN/P}.out.txt",
        "dataset": f"{name}_out.txt/", "container": f"{name}_out.txt/", "hidden": True}]
    return params


class Watcher(threading.Thread):
    """In the background while a DAG runs: a stand-in pilot that runs every job the task gets
    activated (to ``finished``), and a record of the task's (status, attemptNr, stateChangeTime),
    one entry per change, with when it was first seen. Stops when told, or at the backend's deadline."""

    def __init__(self, backend: RealBackend, task_id: int) -> None:
        super().__init__(daemon=True)
        from integration.real_panda.pilot import StandInPilot

        self.backend, self.task_id = backend, task_id
        self.pilot = StandInPilot(backend.url, backend.issuer.mint("prod", DEFAULT_USERS["prod"]))
        self.stopping = threading.Event()
        self.reported: list[int] = []
        self.history: list[tuple[float, str, Any, Any]] = []  # (epoch seconds, status, attemptNr, stateChangeTime)
        self.errors: list[BaseException] = []
        self.began, self.began_at = time.monotonic(), time.time()

    def run(self) -> None:
        try:
            hook = PandaHook()
            deadline = self.began + 2 * self.backend.timeout
            while not self.stopping.is_set() and time.monotonic() < deadline:
                info = hook.get_task_info(self.task_id)
                reading = (info.get("status"), info.get("attemptNr"), str(info.get("stateChangeTime")))
                if not self.history or self.history[-1][1:] != reading:
                    self.history.append((time.time(), *reading))
                jobs = self.pilot.acquire(self.task_id)
                for job in jobs:
                    self.pilot.report(job, succeed=True)
                    self.reported.append(int(job["PandaID"]))
                if not jobs:
                    self.stopping.wait(0.5)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def stop(self) -> list[BaseException]:
        self.stopping.set()
        self.join(60)
        assert not self.is_alive(), "the watcher did not stop"
        return self.errors

    def timeline(self) -> str:
        """The record, in seconds since the watch began, for a failure message."""
        return ", ".join(f"+{at - self.began_at:.1f}s {status} (attempt {attempt})"
                         for at, status, attempt, _ in self.history)

    def statuses(self) -> list[str]:
        """The statuses the task went through, in order, repeats of a status merged."""
        seen: list[str] = []
        for _, status, _, _ in self.history:
            if not seen or seen[-1] != status:
                seen.append(status)
        return seen


#: The loggers of the sensor's waits: its pokes and its trigger (not the command operators' own reads).
SENSOR_LOGGERS = r"sensors\.status\.TaskStatusSensor|triggers\.wait\.PandaTaskTrigger"


def sensor_readings(output: str, task_id: int) -> list[tuple[float, str]]:
    """What the sensors (pokes and triggers) logged for the task, in order: (epoch seconds, status)
    of their first reading and of each move."""
    found = re.findall(rf"^(\S+) \[info\s*\] PanDA task {task_id}: \S+ -> (\w+)\s+\[[\w.]*(?:{SENSOR_LOGGERS})\]",
                       output, re.M)
    return [(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp(), status) for at, status in found]


def wait_lines(output: str, task_id: int) -> str:
    """The waits' log lines about the task, for a failure message."""
    return "\n".join(line[:200] for line in output.splitlines() if f"PanDA task {task_id}" in line)


def run_to(backend: RealBackend, hook: PandaHook, params: dict[str, Any], outcome: str) -> int:
    """Submit the task and have the stand-in pilot end its first attempt with ``outcome``."""
    task_id = hook.submit_task(params)
    pilot = pilot_for(backend, [outcome], task_id=task_id)
    assert wait_status(backend, hook, task_id, api.TASK_STOPPED) == outcome
    assert not joined(pilot, backend)
    return task_id


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_real_recover_then_wait_again(backend, hook, capfd, mode):
    """FileRecoveryOperator >> TaskStatusSensor on a ``done`` task with an output: the sensor reads
    the old ``done`` and the interim ``finished`` (both from before the recovery ran) and ends only
    on the recovered attempt's ``done``."""
    task_id = run_to(backend, hook, with_output(backend.task_params("realrecwait")), "done")
    before = task_info(backend, task_id)
    assert (before["status"], before["attemptNr"]) == ("done", 0)
    capfd.readouterr()
    watcher = Watcher(backend, task_id)
    watcher.start()
    try:
        run = run_dag(f"FileRecoveryOperator(task_id='recover', jedi_task_id={task_id}) >> "
                      f"{sensor(backend, 'wait_again', task_id, mode)}\n")
    finally:
        errors = watcher.stop()
    output = capfd.readouterr().out
    story = f"PanDA task {task_id}, server: {watcher.timeline()}\nwaits:\n{wait_lines(output, task_id)}"
    print(story)
    assert not errors and run.states == {"recover": "success", "wait_again": "success"}, (
        f"{run.states} {errors}\n{story}")
    mark = run.xcom("recover", "panda_command")
    assert (mark["jedi_task_id"], mark["status"], mark["attempt"], mark["command"]) == (
        task_id, "done", 0, "file recovery")
    after = task_info(backend, task_id)
    assert after["status"] == "done" and after["attemptNr"] > before["attemptNr"], after
    assert watcher.reported, "the recovery ran no job"  # the recovered attempt's jobs, run by the pilot
    # The server went done -> finished (the bare UPDATE) -> ... -> done (attempt + 1).
    assert "finished" in watcher.statuses() and watcher.statuses()[-1] == "done", story
    # The sensor ended on a done it saw the task move to (not on a first reading of done); it cannot
    # have ended on the interim finished (a failure status for it), as it succeeded.
    readings = sensor_readings(output, task_id)
    statuses = [status for _, status in readings]
    assert saw_move_to(output, task_id, "done") and statuses[-1] == "done" and len(statuses) > 1, story
    # It started while the task still showed the old done (the server's first move, to finished,
    # came seconds later: JEDI picks the request up once its file is 5 s old): it read that done,
    # the status before the command, and did not end on it. (1 s: the watcher's reading interval.)
    first_move = next(at for at, status, _, _ in watcher.history if status != "done")
    if readings[0][0] < first_move - 1.0:
        assert statuses[0] == "done", story


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_real_retry_then_wait_again(backend, hook, capfd, mode):
    """A sensor fails on ``failed``; RetryTaskOperator (trigger_rule one_failed) retries with more
    memory; a second sensor waits past the old ``failed`` for the retry's ``done``."""
    task_id = run_to(backend, hook, backend.task_params("realretrywait"), "failed")
    before = task_info(backend, task_id)
    assert before["status"] == "failed" and before["ramCount"] == 2000, before
    old_jobs = {job["PandaID"]: job for job in hook.get_task_jobs(task_id) if job}
    assert len(old_jobs) == N_JOBS and all(job["jobStatus"] == "failed" for job in old_jobs.values())
    capfd.readouterr()
    watcher = Watcher(backend, task_id)
    watcher.start()
    try:
        run = run_dag(f"wait = {sensor(backend, 'wait', task_id, mode)}\n"
                      f"retry = RetryTaskOperator(task_id='retry', jedi_task_id={task_id}, "
                      "new_params={'ramCount': 4000}, trigger_rule='one_failed')\n"
                      f"wait >> retry >> {sensor(backend, 'wait_again', task_id, mode)}\n")
    finally:
        errors = watcher.stop()
    output = capfd.readouterr().out
    story = f"PanDA task {task_id}, server: {watcher.timeline()}\nwaits:\n{wait_lines(output, task_id)}"
    print(story)
    assert not errors and run.states == {"wait": "failed", "retry": "success", "wait_again": "success"}, (
        f"{run.states} {errors}\n{story}")
    mark = run.xcom("retry", "panda_command")
    assert (mark["jedi_task_id"], mark["status"], mark["command"]) == (task_id, "failed", "retry")
    after = task_info(backend, task_id)
    assert after["status"] == "done" and after["ramCount"] == 4000, after
    # The attemptNr of the task ends where it was (0): only stateChangeTime says it ran again.
    assert str(after["stateChangeTime"]) != str(before["stateChangeTime"]), (before, after)
    new_jobs = [job for job in hook.get_task_jobs(task_id) if job and job["PandaID"] not in old_jobs]
    assert new_jobs and all(job["jobStatus"] == "finished" for job in new_jobs), new_jobs
    assert {job["PandaID"] for job in new_jobs} <= set(watcher.reported)  # run by the pilot, after the retry
    old_ram = max(job["minRamCount"] for job in old_jobs.values())
    assert all(job["minRamCount"] > old_ram for job in new_jobs), (old_ram, [j["minRamCount"] for j in new_jobs])
    # The first sensor read the old failed and failed on it; the second ended on a done it saw the
    # task move to. (JEDI may act on the retry before the second sensor's first reading, so whether
    # that one read the old failed too depends on the timing: seen both ways.)
    statuses = [status for _, status in sensor_readings(output, task_id)]
    assert statuses[0] == "failed" and statuses[-1] == "done" and saw_move_to(output, task_id, "done"), story
