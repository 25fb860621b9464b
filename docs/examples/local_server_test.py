"""Testing against the local PanDA server: start it in the test, point the connection at it, run the task.

The server binds a free port on 127.0.0.1; ``step`` is the seconds per task status, so a task is ``done``
within a second. The task name chooses the outcome (``.flaky.``, ``.failing.``, ``.lost.``, ...).
"""

from __future__ import annotations

import json
import time

import pytest

from airflow_provider_panda.builder import PrunTask, build_task_params
from airflow_provider_panda.exceptions import PandaNotFoundError
from airflow_provider_panda.hooks.panda import PandaHook
from airflow_provider_panda.testing.server import LocalPandaServer


def wait_for_end(hook: PandaHook, task_id: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = hook.get_task_status(task_id)
        except PandaNotFoundError:  # only DEFT knows a just-submitted task: "not yet"
            status = None
        if status in ("done", "finished", "failed", "broken", "aborted"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"PanDA task {task_id} did not end within {timeout} s")


@pytest.mark.parametrize(("tag", "outcome"), [("demo", "done"), ("failing", "failed")])
def test_a_prun_task_ends_as_its_name_says(monkeypatch, tag, outcome):
    with LocalPandaServer(step=0.05) as server:
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(server.connection()))
        hook = PandaHook()
        task = PrunTask(exec="echo hello", out_ds=f"user.alice.docs.{tag}.{time.time_ns()}", n_jobs=1)
        task_id = hook.submit_task(build_task_params(task, hook))
        assert wait_for_end(hook, task_id) == outcome
