"""The real Airflow components (api-server, scheduler, dag-processor, triggerer; LocalExecutor, SQLite)
run panda_fan_out against the local PanDA server: the waits must be served by the triggerer, the run
must succeed, and each PanDA task must be submitted once."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"
N_TASKS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(db: Path, sql: str, *args):
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def wait_until(predicate, timeout: float, what: str, procs: dict):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited while waiting for {what}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def slow_server():
    """A server whose tasks take seconds, as real ones take minutes: a trigger that fires within
    a second of deferral races Airflow's own LocalExecutor bookkeeping (the executor's late
    'success' for the deferred run fails the re-queued task), which is not what this test is about."""
    from airflow_provider_panda.testing.server import LocalPandaServer

    with LocalPandaServer(step=2.0) as server:
        yield server


@pytest.fixture
def airflow_cluster(tmp_path, slow_server):
    """Start the four Airflow components; stop them by PID at the end, also on failure."""
    panda_server = slow_server
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW_CONN_PANDA_DEFAULT": json.dumps(panda_server.connection(retry_wait=0.1)),
        "PANDA_EXAMPLE_POLL": "0.5",
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    procs: dict[str, subprocess.Popen] = {}
    logs = {}
    for name, args in [("api-server", ["api-server", "--port", str(port)]), ("scheduler", ["scheduler"]),
                       ("dag-processor", ["dag-processor"]), ("triggerer", ["triggerer"])]:
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env, stdout=open(logs[name], "w"),
                                       stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield env, procs, logs, tmp_path / "airflow.db"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_fan_out_under_scheduler_and_triggerer(airflow_cluster, slow_server):
    panda_server = slow_server
    env, procs, logs, db = airflow_cluster
    started = time.monotonic()
    wait_until(lambda: query(db, "SELECT 1 FROM dag WHERE dag_id='panda_fan_out'") if db.exists() else None,
               180, "the DAG to be parsed", procs)
    polls_before = panda_server.panda.clients["airflow-provider-panda (httpx)"]
    subprocess.run([sys.executable, "-m", "airflow", "dags", "trigger", "panda_fan_out", "-c",
                    json.dumps({"tag": "e2e", "n_tasks": N_TASKS})], env=env, check=True, capture_output=True)
    most_triggers = 0

    def run_ended():
        nonlocal most_triggers
        rows = query(db, "SELECT COUNT(*) FROM trigger WHERE classpath LIKE '%PandaTaskTrigger'")
        most_triggers = max(most_triggers, rows[0][0])
        return [s for (s,) in query(db, "SELECT state FROM dag_run WHERE dag_id='panda_fan_out'")
                if s in ("success", "failed")]

    state = wait_until(run_ended, 300, "the run to end", procs)
    elapsed = time.monotonic() - started
    states = query(db, "SELECT task_id, map_index, state, try_number FROM task_instance WHERE dag_id='panda_fan_out'")
    assert state == ["success"], (states, logs["scheduler"].read_text()[-3000:])
    mapped = [row for row in states if row[0] == "submit"]
    assert len(mapped) == N_TASKS and {row[2] for row in mapped} == {"success"}
    tasks = [t for t in panda_server.sim.tasks.values() if ".fan_out.e2e." in t.name]
    assert len(tasks) == N_TASKS and len({t.name for t in tasks}) == N_TASKS  # one PanDA task per map index
    # The waits ran in the triggerer: trigger rows existed for them, each mapped task has a trigger
    # log with our status lines, and the status polls came from the async (httpx) client that only
    # the trigger uses.
    assert most_triggers >= N_TASKS // 2, most_triggers
    trigger_logs = list(db.parent.glob("logs/dag_id=panda_fan_out/*/task_id=submit/map_index=*/*.trigger.*.log"))
    assert len({p.parent for p in trigger_logs}) == N_TASKS
    assert all("-> done" in p.read_text() for p in trigger_logs if "Trigger fired event" in p.read_text())
    assert panda_server.panda.clients["airflow-provider-panda (httpx)"] - polls_before >= N_TASKS
    assert "blocked" not in logs["triggerer"].read_text()  # no "async thread was blocked" warning
    print(f"panda_fan_out: {N_TASKS} deferred waits under the real scheduler and triggerer, "
          f"{most_triggers} triggers at once, {elapsed:.0f} s")
