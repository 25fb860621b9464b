"""Callbacks that test DAGs run inside Airflow tasks to steer the local server (via /_control)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import requests


def _server_url() -> str:
    return json.loads(os.environ["AIRFLOW_CONN_PANDA_DEFAULT"])["host"]


def finish_on_retry(context, task_name: str) -> None:
    """On the second try, let the (hanging) task named ``task_name`` run on to done."""
    if context["ti"].try_number < 2:
        return
    url = _server_url()
    [task] = [t for t in requests.get(f"{url}/_control/tasks").json() if t["taskName"] == task_name]
    requests.post(f"{url}/_control/tasks/{task['jediTaskID']}", json={"outcomes": ["done"], "status": "running"})


def _task(task_name: str) -> dict | None:
    found = [t for t in requests.get(f"{_server_url()}/_control/tasks").json() if t["taskName"] == task_name]
    return found[0] if found else None


def cut_first_try_when(context, task_name: str, running: bool) -> None:
    """Try 1 only: once the server has the task named ``task_name`` (and, with ``running``, has
    served this try two reads of it while ``running``), raise Airflow's own task timeout in this
    process, as ``execution_timeout`` does (SIGALRM to Airflow's handler): a worker cut off at a
    moment a condition fixes, not the clock, so a loaded machine cannot move it. Needs the
    operator's ``execution_timeout`` set (to something long), so Airflow's handler is installed."""
    if context["ti"].try_number >= 2:
        return
    pid, deadline = os.getpid(), time.monotonic() + 120

    def ready() -> bool:
        task = _task(task_name)
        if task is None or not running:
            return task is not None
        if task["status"] != "running":
            return False
        base = ready.__dict__.setdefault("reads", task["reads"])
        return task["reads"] >= base + 2

    def watch() -> None:
        while time.monotonic() < deadline:
            if ready():
                handler = signal.getsignal(signal.SIGALRM)
                if type(getattr(handler, "__self__", None)).__name__ == "TimeoutPosix":  # still in try 1
                    os.kill(pid, signal.SIGALRM)
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def cut_first_try_then_finish(context, task_name: str) -> None:
    """Try 1 is cut off while it waits on its running task; try 2 lets that task run on to done."""
    cut_first_try_when(context, task_name, running=True)
    finish_on_retry(context, task_name)
