"""Callbacks that test DAGs run inside Airflow tasks to steer the local server (via /_control)."""

from __future__ import annotations

import json
import os

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
