"""The PanDA view's endpoints (airflow_provider_panda/ui) in a real api-server with a DAG run made by
``airflow dags test`` against the local PanDA server: what they show, who may see it (Airflow's auth
manager: 403 for a user it refuses, 401 without a login), that N concurrent viewers cost PanDA one
read, and that no secret of the connection reaches the browser. The cache and the connection test
fix also alone (pure).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from airflow_provider_panda.ui.cache import TaskCache
from airflow_provider_panda.ui.plugin import fixed_test_body
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
DAG_ID = "panda_view_test"

try:  # the auth manager the api-server below runs: Airflow's simple one, refusing DAGs to "outsider"
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class RefusingAuthManager(SimpleAuthManager):
        """SimpleAuthManager that lets the user ``outsider`` read no DAG (a per-user DAG rule, as a
        real deployment's auth manager has)."""

        def is_authorized_dag(self, *, method, user, access_entity=None, details=None):  # type: ignore[override]
            if user.get_name() == "outsider":
                return False
            return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
except ImportError:  # pragma: no cover
    pass


# --- pure ---------------------------------------------------------------------------------------


def test_concurrent_readers_of_one_task_cost_one_read_per_ttl():
    now = [0.0]
    cache = TaskCache(ttl=10.0, clock=lambda: now[0])
    gate, loads = threading.Event(), []

    def load() -> dict:
        loads.append(1)
        gate.wait(5)  # the read is slow: every other viewer arrives while it is in flight
        return {"status": "running"}

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(cache.get, ("c", 1), load) for _ in range(20)]
        wait_for(lambda: loads, 5)
        gate.set()
        answers = [f.result() for f in futures]
    assert len(loads) == 1 and all(a["task"] == {"status": "running"} for a in answers)
    now[0] = 9.9
    cache.get(("c", 1), load)
    assert len(loads) == 1  # still fresh
    now[0] = 10.0
    assert cache.get(("c", 1), lambda: {"status": "done"})["history"][-1][0] == "done"
    assert cache.get(("c", 2), load) and len(loads) == 2  # another task: its own read


def test_a_failed_read_is_shared_too_and_says_why():
    cache = TaskCache(ttl=10.0, clock=lambda: 0.0)
    calls = []

    def boom() -> dict:
        calls.append(1)
        raise RuntimeError("PanDA is down")

    first, second = cache.get("k", boom), cache.get("k", boom)
    assert len(calls) == 1 and first["error"] == second["error"] == "RuntimeError: PanDA is down"


def test_the_test_buttons_port_0_is_dropped_only_for_panda_connections():
    panda = {"connection_id": "p", "conn_type": "panda", "host": "https://x", "port": 0, "password": "***"}
    assert "port" not in json.loads(fixed_test_body(json.dumps(panda).encode()))
    for other in ({**panda, "conn_type": "http"}, {**panda, "port": 25443}):
        body = json.dumps(other).encode()
        assert fixed_test_body(body) == body
    assert fixed_test_body(b"not json") == b"not json"


# --- a real api-server --------------------------------------------------------------------------

DAG_FILE = '''
import json
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider_panda.operators import SubmitTaskOperator

BASE = json.loads({base!r})
with DAG("{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    SubmitTaskOperator(task_id="partial", task_params={{**BASE, "taskName": "user.alice.view.partial.{tag}"}},
                       wait_for_completion=True, allow_partial=True, poll_interval=0.05, deferrable=False)
    SubmitTaskOperator(task_id="second", task_params={{**BASE, "taskName": "user.alice.view.second.{tag}"}},
                       wait_for_completion=True, poll_interval=0.05, deferrable=False)
    SubmitTaskOperator.partial(task_id="fan", wait_for_completion=True, poll_interval=0.05,
                               deferrable=False).expand(
        task_params=[{{**BASE, "taskName": f"user.alice.view.fan{{i}}.{tag}"}} for i in range(2)])
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def view_server(tmp_path_factory, panda_server):
    from tests.conftest import task_params

    home = tmp_path_factory.mktemp("view-airflow")
    (home / "dags").mkdir()
    tag = str(int(time.time() * 1000))
    base = task_params("view")
    base.pop("taskName")
    base.update(nEvents=40, nEventsPerJob=5)  # 8 jobs: the partial task's 4 failed jobs give errors
    panda_server.sim.add_rule(rf"view\.partial\.{tag}$", ["finished"])
    panda_server.sim.add_job_errors(rf"view\.partial\.{tag}$", [{
        "pilotErrorCode": 1212, "pilotErrorDiag": "payload ran out of memory", "computingSite": "SITE_A"}])
    (home / "dags" / "view_dag.py").write_text(DAG_FILE.format(base=json.dumps(base), dag_id=DAG_ID, tag=tag))
    conn = panda_server.connection("user", refresh_token="refresh-" + "s3cret-never-shown")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PANDA"))}
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.test_panda_view.RefusingAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW_CONN_PANDA_DEFAULT": json.dumps(conn), "PYTHONPATH": str(ROOT),
    })
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    ran = subprocess.run([*airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True, cwd=ROOT)
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    log = open(home / "api-server.log", "a")
    proc = subprocess.Popen([*airflow, "api-server", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (home / "api-server.log").read_text()[-3000:]
        try:
            return requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, 120, 0.2)
        passwords = json.loads(wait_for(lambda: next(home.glob("simple_auth_manager_passwords.json*"), None),
                                        30).read_text())

        def token(user: str) -> str:
            answer = requests.post(f"{url}/auth/token", json={"username": user, "password": passwords[user]},
                                   timeout=30)
            assert answer.status_code in (200, 201), answer.text
            return answer.json()["access_token"]

        with sqlite3.connect(home / "airflow.db") as db:
            (run_id,), = db.execute("SELECT run_id FROM dag_run WHERE dag_id=?", (DAG_ID,)).fetchall()
        yield {"url": url, "run_id": run_id, "admin": token("admin"), "outsider": token("outsider"),
               "secrets": [conn["password"], conn["extra"]["refresh_token"]], "panda": panda_server}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def test_the_view_shows_the_task_to_who_may_read_the_dag_and_nothing_secret(view_server):
    s = view_server
    base = f"{s['url']}/panda"
    run = requests.utils.quote(s["run_id"], safe="")
    admin = {"Authorization": f"Bearer {s['admin']}"}
    panda = s["panda"].panda

    # N viewers of a task nobody looked at yet, all at once: PanDA is read once
    before = dict(panda.requests)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{base}/api/dags/{DAG_ID}/runs/{run}/tasks/second",
                                                      headers=admin, timeout=60), range(16)))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    for call in ("task/get_detailed_info", "task/get_details", "task/get_job_descriptions"):
        assert panda.requests[call] - before.get(call, 0) == 1, (call, dict(panda.requests))
    assert panda.requests["task/get_job_ids"] == before.get("task/get_job_ids", 0)  # never the job list
    second = answers[0].json()["tasks"][0]
    assert second["panda"]["task"]["status"] == "done" and second["panda"]["task"]["progress"]["finished"] == 8

    # the partly failed task: progress, jobs by status, the errors with their site, the outputs
    data = requests.get(f"{base}/api/dags/{DAG_ID}/runs/{run}/tasks/partial", headers=admin, timeout=60).json()
    task = data["tasks"][0]["panda"]["task"]
    assert task["status"] == "finished" and task["progress"] == {
        "files": 8, "finished": 4, "failed": 4, "pct_finished": 50, "pct_failed": 50}, task
    assert dict(task["jobs"]) == {"finished": 4, "failed": 4}, task["jobs"]
    assert task["errors"][0]["count"] == 4 and "1212" in task["errors"][0]["error"], task["errors"]
    assert task["errors"][0]["sites"] == [["SITE_A", 4]]
    assert data["tasks"][0]["monitor_url"].endswith(f"/monitor/task/{data['tasks'][0]['jedi_task_id']}/")

    # HTML: the same facts; the run page lists every PanDA task, the mapped ones by index
    page = requests.get(f"{base}/view/dags/{DAG_ID}/runs/{run}/tasks/partial?map_index={{MAP_INDEX}}",
                        headers=admin, timeout=60)
    assert page.status_code == 200 and "4 of 8 input files finished, 4 failed (50%)" in page.text
    assert "SITE_A &times;4" in page.text and "PanDA monitor" in page.text
    summary = requests.get(f"{base}/view/dags/{DAG_ID}/runs/{run}", headers=admin, timeout=60)
    assert summary.status_code == 200 and "4 of 4 ended" in summary.text, summary.text[:2000]
    assert re.search(r"fan \[[^\]]+\]", summary.text), summary.text[:3000]
    runs = requests.get(f"{base}/api/dags/{DAG_ID}/runs/{run}", headers=admin, timeout=60).json()
    assert sorted((t["task_id"], t["map_index"]) for t in runs["tasks"]) == [
        ("fan", 0), ("fan", 1), ("partial", -1), ("second", -1)]
    one = requests.get(f"{base}/api/dags/{DAG_ID}/runs/{run}/tasks/fan?map_index=1", headers=admin, timeout=60)
    assert [t["map_index"] for t in one.json()["tasks"]] == [1]

    # who may see it: a user Airflow refuses the DAG gets 403, no login 401; nothing read for them
    before = sum(panda.requests.values())
    for path in (f"api/dags/{DAG_ID}/runs/{run}/tasks/partial", f"view/dags/{DAG_ID}/runs/{run}",
                 f"view/dags/{DAG_ID}/runs/{run}/tasks/fan?map_index=0"):
        refused = requests.get(f"{base}/{path}", headers={"Authorization": f"Bearer {s['outsider']}"}, timeout=30)
        assert refused.status_code == 403, (path, refused.status_code, refused.text)
        assert requests.get(f"{base}/{path}", timeout=30).status_code == 401
        assert requests.get(f"{base}/{path}", cookies={"_token": s["admin"]}, timeout=30).status_code == 200
    assert sum(panda.requests.values()) == before  # all cached, and nothing for the refused

    # no secret of the connection in anything the browser gets
    for body in (*[a.text for a in answers], page.text, summary.text, json.dumps(runs), one.text):
        for secret in s["secrets"]:
            assert secret not in body
        assert "Bearer" not in body and "PRIVATE KEY" not in body
