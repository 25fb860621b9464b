"""Every example DAG, run with ``airflow dags test`` against the local server, on its success path and
its failure path. States and XComs are read from the run's own metadata database afterwards."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

#: Each `airflow dags test` starts Airflow afresh: minutes on a busy machine (the module's first test also
#: pays the database's migration). Load must only slow these, never fail them.
pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_dags"
#: The DAGs the docs include (docs/examples), run here so every example in the docs is one that runs.
DOCS_EXAMPLES = ROOT / "docs" / "examples"


def _airflow_env(home: Path, dags: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        # the DAGs import _common: Airflow's dag-processor and workers put the bundle on sys.path, but 3.1's
        # `dags test` and `dags reserialize` do not
        "PYTHONPATH": os.pathsep.join(p for p in (str(dags), os.environ.get("PYTHONPATH")) if p),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PANDA_EXAMPLE_POLL": "0.1",
        "PANDA_EXAMPLE_TIMEOUT": "1",
        # `dags test` runs triggers inline, with no executor to race (triggers.wait.EVENT_HOLD)
        "AIRFLOW__PANDA__TRIGGER_EVENT_HOLD": "0",
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    # Airflow 3.0's `dags test` reads DAGs from the database only: serialise them first.
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    return _airflow_env(tmp_path_factory.mktemp("airflow-examples"), EXAMPLES)


@pytest.fixture(scope="module")
def docs_airflow_env(tmp_path_factory):
    return _airflow_env(tmp_path_factory.mktemp("airflow-docs"), DOCS_EXAMPLES)


def _json(value):
    """An XCom value as SQLite returns Airflow's JSON column: text to decode, or already a number."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


class DagRun:
    def __init__(self, db: Path, dag_id: str, output: str, returncode: int):
        self.output = output
        self.returncode = returncode
        with sqlite3.connect(db) as conn:
            self.run_id, self.run_state = conn.execute(
                "SELECT run_id, state FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1", (dag_id,)).fetchone()
            rows = conn.execute("SELECT task_id, map_index, state FROM task_instance WHERE dag_id=? AND run_id=?",
                                (dag_id, self.run_id)).fetchall()
            self.states = {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in rows}
            self.xcoms = {(t, m, k): _json(v) for t, m, k, v in conn.execute(
                "SELECT task_id, map_index, key, value FROM xcom WHERE dag_id=? AND run_id=?",
                (dag_id, self.run_id)).fetchall()}

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1):
        return self.xcoms.get((task_id, map_index, key))


def _dags_test(airflow_env, panda_server):
    def run(dag_id: str, env: dict[str, str] | None = None, **conf) -> DagRun:
        env = dict(airflow_env, AIRFLOW_CONN_PANDA_DEFAULT=json.dumps(panda_server.connection(retry_wait=0.01)),
                   **(env or {}))
        command = [sys.executable, "-m", "airflow", "dags", "test", dag_id]
        if conf:
            command += ["-c", json.dumps(conf)]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=840)
        result = DagRun(Path(airflow_env["AIRFLOW_HOME"]) / "airflow.db", dag_id, proc.stdout + proc.stderr,
                        proc.returncode)
        # `airflow dags test` exits 0 for a successful run and 1 ("DagRun failed") for a failed one
        expected = 1 if result.run_state == "failed" else 0
        assert proc.returncode == expected, (result.run_state, proc.returncode, result.output[-3000:])
        return result

    return run


@pytest.fixture
def dags_test(airflow_env, panda_server):
    return _dags_test(airflow_env, panda_server)


@pytest.fixture
def docs_dags_test(docs_airflow_env, panda_server):
    return _dags_test(docs_airflow_env, panda_server)


def panda_tasks(server, fragment: str):
    return [t for t in server.sim.tasks.values() if fragment in t.name]


def test_submit_and_wait_success(dags_test, panda_server):
    run = dags_test("panda_submit_and_wait", tag="ok1")
    assert run.states == {"submit": "success", "summarise": "success"}, run.output[-3000:]
    assert run.returncode == 0
    [task] = panda_tasks(panda_server, ".submit.ok1.")
    assert task.status == "done" and run.xcom("submit") == task.task_id
    assert run.xcom("summarise") == {"jedi_task_id": task.task_id, "finished_jobs": 2, "events": 10}
    assert run.xcom("submit", "_link_PandaTaskLink") == f"{panda_server.url}/monitor/task/{task.task_id}/"


def test_submit_and_wait_failure(dags_test, panda_server):
    run = dags_test("panda_submit_and_wait", tag="failing")
    assert run.states == {"submit": "failed", "summarise": "upstream_failed"}
    assert "ended failed." in run.output and "2 of the 2 newest jobs failed" in run.output
    assert "Next: retry it (RetryTaskOperator" in run.output
    assert run.returncode == 1


def test_auto_retry_success(dags_test, panda_server):
    run = dags_test("panda_auto_retry", tag="flaky")
    assert run.states == {"submit_with_auto_retries": "success", "submit": "success", "wait": "failed",
                          "retry_on_failure": "success"}, run.output[-3000:]
    auto = next(t for t in panda_tasks(panda_server, ".submit_with_auto_retries.flaky."))
    assert auto.attempt == 1 and auto.status == "done" and auto.params["ramCount"] == 4000
    sensed = next(t for t in panda_tasks(panda_server, ".submit.flaky."))
    assert sensed.attempt == 1 and sensed.status == "done"


def test_auto_retry_failure(dags_test, panda_server):
    run = dags_test("panda_auto_retry", tag="failing")
    assert run.states == {"submit_with_auto_retries": "failed", "submit": "success", "wait": "failed",
                          "retry_on_failure": "failed"}
    auto = next(t for t in panda_tasks(panda_server, ".submit_with_auto_retries.failing."))
    assert auto.attempt == 3  # three automatic retries, then the Airflow task failed


def test_file_recovery_success(dags_test, panda_server):
    run = dags_test("panda_file_recovery", tag="lost")
    assert run.states == {"submit": "success", "lost_files": "success", "recover": "success",
                          "wait_again": "success"}, run.output[-3000:]
    [task] = panda_tasks(panda_server, "panda_file_recovery.submit.lost.")
    assert task.recoveries == 1 and task.status == "done"
    assert run.xcom("recover").startswith(panda_server.url + "/cache/jedilog/lost_file_recovery.")


def test_file_recovery_not_needed(dags_test, panda_server):
    run = dags_test("panda_file_recovery", tag="clean")
    assert run.states == {"submit": "success", "lost_files": "success", "recover": "skipped",
                          "wait_again": "skipped"}


def test_file_recovery_failure(dags_test, panda_server):
    run = dags_test("panda_file_recovery", tag="broken")
    assert run.states["submit"] == "failed" and run.states["recover"] == "upstream_failed"


def test_fan_out(dags_test, panda_server):
    run = dags_test("panda_fan_out", tag="fan", n_tasks=12)
    mapped = {k: v for k, v in run.states.items() if k.startswith("submit[")}
    assert len(mapped) == 12 and set(mapped.values()) == {"success"}, run.output[-3000:]
    tasks = panda_tasks(panda_server, ".fan_out.fan.")
    assert len(tasks) == 12 and len({t.name for t in tasks}) == 12  # each submitted once
    assert {run.xcom("submit", map_index=i) for i in range(12)} == {t.task_id for t in tasks}


def test_fan_out_failure(dags_test, panda_server):
    run = dags_test("panda_fan_out", tag="failing", n_tasks=3)
    assert {v for k, v in run.states.items() if k.startswith("submit[")} == {"failed"}


def test_timeout_kill(dags_test, panda_server):
    run = dags_test("panda_timeout_kill", tag="slow")
    assert run.states == {"kill_when_late": "failed", "finish_when_late": "failed"}
    from conftest import wait_for

    killed = next(t for t in panda_tasks(panda_server, ".kill_when_late.slow."))
    finished = next(t for t in panda_tasks(panda_server, ".finish_when_late.slow."))
    wait_for(lambda: panda_server.sim.visible(killed.task_id).status == "aborted")
    wait_for(lambda: panda_server.sim.visible(finished.task_id).status == "done")  # soft: its jobs completed
    assert "it was killed" in run.output and "asked to finish" in run.output


def test_timeout_not_reached(dags_test, panda_server):
    # the deadline the slow run meets (1 s) would race a quick task's last reads on a busy machine
    run = dags_test("panda_timeout_kill", env={"PANDA_EXAMPLE_TIMEOUT": "300"}, tag="quick")
    assert run.states == {"kill_when_late": "success", "finish_when_late": "success"}


def test_the_readmes_first_dag_is_the_one_that_runs():
    """The README cannot include files: its first DAG must equal docs/examples/first_dag.py."""
    readme = (ROOT / "README.md").read_text()
    source = (DOCS_EXAMPLES / "first_dag.py").read_text()
    shown = source[source.index("from __future__"):]
    assert f"```python\n{shown}```" in readme


def test_the_docs_first_dag(docs_dags_test, panda_server):
    run = docs_dags_test("panda_first_dag")
    assert run.states == {"hello": "success"}, run.output[-3000:]
    [task] = [t for t in panda_server.sim.tasks.values() if t.task_id == run.xcom("hello")]
    assert task.status == "done" and task.name.startswith("user.alice.airflow.hello.")


def test_the_docs_prun_analysis(docs_dags_test, panda_server):
    run = docs_dags_test("panda_prun_analysis")
    assert run.states == {"analyse": "success", "generate": "success"}, run.output[-3000:]
    [analysis] = [t for t in panda_server.sim.tasks.values() if t.task_id == run.xcom("analyse")]
    assert analysis.params["ramCount"] == 4000 and analysis.status == "done"


def test_the_docs_own_retry_policy(docs_dags_test, panda_server):
    """The policy of docs/pipelines.md: a first attempt killed for memory is retried once with twice the memory."""
    panda_server.sim.add_rule(r"^user\.alice\.sim\.", ["failed", "done"])
    panda_server.sim.add_job_errors(r"^user\.alice\.sim\.", [{"pilotErrorCode": 1212, "transExitCode": 0,
                                                             "exeErrorCode": 0, "pilotErrorDiag": "out of memory"}])
    run = docs_dags_test("panda_own_retry_policy")
    assert run.states == {"simulate": "success"}, run.output[-3000:]
    [task] = [t for t in panda_server.sim.tasks.values() if t.task_id == run.xcom("simulate")]
    assert task.attempt == 1 and task.params["ramCount"] == 4000
