"""`make demo`: the local PanDA server, an Airflow connection to it, and the example DAG
panda_submit_and_wait run with `airflow dags test`; prints the outcome, stops what it started.

Everything lives under .demo/ (Airflow home and its SQLite database); nothing else is touched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DAG_ID = "panda_submit_and_wait"


def main() -> int:
    from airflow_provider_panda.testing.server import LocalPandaServer

    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(DEMO / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PANDA_EXAMPLE_POLL": "1",
        # `dags test` runs the trigger inline, with no executor to race: no need to hold its event
        "AIRFLOW__PANDA__TRIGGER_EVENT_HOLD": "0",
    })
    airflow = [sys.executable, "-m", "airflow"]
    if not (DEMO / "airflow" / "airflow.db").exists():
        print("Setting up Airflow's metadata database in .demo/airflow ...", flush=True)
        subprocess.run(airflow + ["db", "migrate"], env=env, check=True, capture_output=True)
    # Airflow 3's `dags test` (and `dag.test()`) runs serialized DAGs: serialise the examples first.
    subprocess.run(airflow + ["dags", "reserialize"], env=env, check=True, capture_output=True)

    with LocalPandaServer(step=1.0) as server:
        env["AIRFLOW_CONN_PANDA_DEFAULT"] = server.connection_uri_env()
        print(f"Local PanDA server on {server.url}; connection panda_default set through the environment.")
        print(f"Running `airflow dags test {DAG_ID}` (log: .demo/dags-test.log) ...", flush=True)
        with open(DEMO / "dags-test.log", "w") as log:
            proc = subprocess.Popen(airflow + ["dags", "test", DAG_ID], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                log.write(line)
                if "PanDA task" in line or "Submitted PanDA task" in line:
                    print("  " + line.split("] ", 1)[-1].split(" [airflow")[0].strip(), flush=True)
            code = proc.wait()
        tasks = json.loads(__import__("urllib.request").request.urlopen(server.url + "/_control/tasks").read())

    states, url = _outcome(DEMO / "airflow" / "airflow.db")
    print()
    for task in tasks:
        print(f"jediTaskID:   {task['jediTaskID']} ({task['taskName']})")
        print(f"final status: {task['status']}")
    print(f"monitor link: {url}")
    print("Airflow:      " + ", ".join(f"{k}={v}" for k, v in states.items()))
    print(f"Demo took {time.monotonic() - started:.0f} s; `airflow dags test` exit code {code}.")
    return 0 if code == 0 and states and all(v == "success" for v in states.values()) else 1


def _outcome(db: Path) -> tuple[dict[str, str], str]:
    """Task states and the monitor link of the newest run, read from Airflow's database."""
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1",
                              (DAG_ID,)).fetchone()[0]
        states = dict(conn.execute("SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=?",
                                   (DAG_ID, run_id)).fetchall())
        row = conn.execute("SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND key='panda_monitor_url'",
                           (DAG_ID, run_id)).fetchone()
    url = "" if not row else json.loads(row[0]) if isinstance(row[0], (str, bytes)) else str(row[0])
    return states, url


if __name__ == "__main__":
    sys.exit(main())
