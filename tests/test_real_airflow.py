"""The real Airflow components (api-server on 127.0.0.1, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite) against the local PanDA server: panda_fan_out's waits served by the
triggerer; SIGKILL at each step of a submission; and what a user's marks, clears and kills through
Airflow's REST API do to the PanDA tasks. Every wait here is for a condition, never a fixed time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from airflow_runs import RACE_OPERATORS

#: A real cluster on a busy machine can take minutes; load must only slow it, never fail it.
pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

EXAMPLES = Path(__file__).resolve().parent.parent / "example_dags"
#: Airflow >= 3.3 calls a trigger's on_kill when a user marks or clears a deferred task.
TRIGGER_ON_KILL = tuple(int(p) for p in __import__("airflow").__version__.split(".")[:2]) >= (3, 3)
N_TASKS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def query(db: Path, sql: str, *args):
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def wait_until(predicate, timeout: float, what: str, procs: dict, diagnose=None):
    """Poll ``predicate`` until it is true; on failure say what ``diagnose()`` tells of the state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        dead = [name for name, proc in procs.items() if proc.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited while waiting for {what}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{diagnose()}" if diagnose else ""))


@pytest.fixture
def slow_server():
    """A server whose tasks take seconds, as real ones take minutes: a trigger that fires within
    a second of deferral races Airflow's own LocalExecutor bookkeeping (the executor's late
    'success' for the deferred run fails the re-queued task), which is not what this test is about."""
    from airflow_provider_panda.testing.server import LocalPandaServer

    with LocalPandaServer(step=2.0) as server:
        yield server


def never_reuse_trigger_ids(db: Path) -> None:
    """Number triggers in SQLite as PostgreSQL does: never reusing a deleted trigger's id.

    SQLite gives a new row the largest id + 1, so a cleared task's new trigger can take the id of
    the trigger just deleted for it. The triggerer tracks triggers by id: it then neither cancels
    the old one (no ``on_kill``, the PanDA task is not killed) nor starts the new one (seen under
    load: the new try deferred with the old trigger's id 1). Production databases use sequences,
    which never reuse an id; AUTOINCREMENT does the same in SQLite."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    try:
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='trigger'").fetchone()
        table = re.sub(r'^CREATE TABLE "trigger"', "CREATE TABLE trigger_ids", ddl)
        table = table.replace("id INTEGER NOT NULL,", "id INTEGER PRIMARY KEY AUTOINCREMENT,", 1)
        table = re.sub(r",\s*CONSTRAINT \w+ PRIMARY KEY \(id\)", "", table)
        assert "AUTOINCREMENT" in table and "PRIMARY KEY (id)" not in table, ddl  # Airflow's DDL changed
        indexes = [sql for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type='index' AND tbl_name='trigger' AND sql IS NOT NULL")]
        conn.execute("PRAGMA foreign_keys=OFF")  # task_instance.trigger_id refers to the table by name
        conn.execute("BEGIN")
        conn.execute(table)
        conn.execute('INSERT INTO trigger_ids SELECT * FROM "trigger"')
        conn.execute('DROP TABLE "trigger"')
        conn.execute('ALTER TABLE trigger_ids RENAME TO "trigger"')
        for sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
    finally:
        conn.close()


class Cluster:
    """The four Airflow components as separate processes; stopped by PID, also on failure."""

    def __init__(self, home: Path, dags: Path, server, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.home, self.db = home, home / "airflow.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        self.env.update({
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8", "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{self.port}/execution/",
            "AIRFLOW__API__PORT": str(self.port), "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5", "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW_CONN_PANDA_DEFAULT": json.dumps(server.connection(retry_wait=0.1)),
            # Twice the product's hold (triggers.wait.EVENT_HOLD): on a starved machine (make test-stress:
            # a busy process per core, three clusters at once) the deferring worker's late 'success' can
            # reach the scheduler more than 15 s after deferral. The hold's mechanism is what the tests
            # rely on; its default is sized for a scheduler that is not starved.
            "AIRFLOW__PANDA__TRIGGER_EVENT_HOLD": "30",
            **(extra_env or {}),
        })
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True,
                       capture_output=True)
        never_reuse_trigger_ids(self.db)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        for name, args in [("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port)]),
                           ("scheduler", ["scheduler"]),
                           ("dag-processor", ["dag-processor"]), ("triggerer", ["triggerer"])]:
            self.start(name, args)

    def start(self, name: str, args: list[str]) -> None:
        self.logs[name] = self.home / f"{name}.log"
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env,
                                            stdout=open(self.logs[name], "a"), stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def wait_for_dag(self, dag_id: str) -> None:
        wait_until(lambda: self.db.exists() and query(self.db, "SELECT 1 FROM dag WHERE dag_id=?", dag_id),
                   180, f"{dag_id} to be parsed", self.procs)

    def trigger(self, dag_id: str, conf: dict) -> None:
        subprocess.run([sys.executable, "-m", "airflow", "dags", "trigger", dag_id, "-c", json.dumps(conf)],
                       env=self.env, check=True, capture_output=True)

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """A call to Airflow's REST API, as a user (or the UI) makes it."""
        import requests

        base = f"http://127.0.0.1:{self.port}"
        if not getattr(self, "_token", None):
            answer = requests.get(f"{base}/auth/token", timeout=30)
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        answer = requests.request(method, f"{base}/api/v2/{path}", json=body, timeout=60,
                                  headers={"Authorization": f"Bearer {self._token}"})
        assert answer.status_code < 300, (method, path, answer.status_code, answer.text[:500])
        return answer.json()

    def scheduler_says(self, dag_id: str, lines: int = 30) -> str:
        """The scheduler's last lines about ``dag_id`` that tell why an instance failed (an executor
        event, a heartbeat timeout, a state mismatch): for a diagnosis when a task log stops short."""
        words = ("fail", "heartbeat", "mismatch", "executor", "killed", "error")
        said = [line for line in self.logs["scheduler"].read_text(errors="replace").splitlines()
                if dag_id in line and any(w in line.lower() for w in words)]
        return "scheduler:\n" + "\n".join(line[:400] for line in said[-lines:])

    def ti_log(self, dag_id: str, task_id: str) -> str:
        """Every log file of a task instance (all tries, trigger logs too), concatenated."""
        return "".join(p.read_text(errors="replace")
                       for p in sorted(self.home.glob(f"logs/dag_id={dag_id}/**/task_id={task_id}/**/*.log")))


@pytest.fixture
def airflow_cluster(tmp_path, slow_server):
    cluster = Cluster(tmp_path, EXAMPLES, slow_server)
    try:
        yield cluster.env, cluster.procs, cluster.logs, cluster.db
    finally:
        cluster.stop()


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
    # The waits ran in the triggerer and ended there: trigger rows existed for them, each map index
    # has a trigger log (the triggerer opens one when it starts a trigger) and a worker log in which
    # the resumed try reports the ending the trigger's event carried (execute_complete runs only on
    # an event); the status polls came from the async (httpx) client that only the triggerer uses;
    # its waits shared one poller, so fewer polls than waits. (How many trigger rows exist at once
    # depends on how fast the executor starts the tries: on a busy machine they spread out.)
    assert most_triggers >= 2, most_triggers
    index_dirs = list(db.parent.glob("logs/dag_id=panda_fan_out/*/task_id=submit/map_index=*"))
    trigger_logs = [p for d in index_dirs for p in d.glob("*.trigger.*.log")]
    assert len({p.parent for p in trigger_logs}) == N_TASKS

    def resumed() -> set:
        return {d for d in index_dirs for p in d.glob("attempt=*.log")
                if ".trigger." not in p.name and " ended done" in p.read_text(errors="replace")}

    wait_until(lambda: len(resumed()) == N_TASKS, 60, "every mapped try to report the trigger's ending", procs,
               lambda: f"{len(resumed())} of {N_TASKS} worker logs report it")
    # Our trigger's status lines are in the trigger logs. Not required of every one: Airflow's
    # triggerer drops a trigger's logger when the trigger reports itself finished, and lines still
    # on their way then go to the triggerer's own log (airflow/jobs/triggerer_job_runner.py,
    # logger_cache), so under load a wait whose only line came with its ending loses it (23 of 24).
    assert any("PanDA task" in (text := p.read_text(errors="replace")) and " -> " in text for p in trigger_logs)
    polls = panda_server.panda.clients["airflow-provider-panda (httpx)"] - polls_before
    assert 1 <= polls < N_TASKS, polls
    print(f"panda_fan_out: {N_TASKS} deferred waits under the real scheduler and triggerer, "
          f"{most_triggers} triggers at once, {polls} triggerer requests, {elapsed:.0f} s")


CRASH_DAG = '''
import os, time
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow_provider_panda.operators import SubmitTaskOperator

MARKS = os.environ["PANDA_CRASH_MARKS"]


def mark(context):
    """Say which process runs this try, for the test to kill."""
    ti = context["ti"]
    with open(os.path.join(MARKS, f"{ti.task_id}.{ti.try_number}"), "w") as handle:
        handle.write(str(os.getpid()))


def slow_start(context):
    mark(context)
    if context["ti"].try_number == 1:
        # hold until the test has killed this try (it never writes the release file); a deadline,
        # not a fixed time, so a slow machine cannot let the try submit before the kill
        deadline = time.monotonic() + 300
        while not os.path.exists(os.path.join(MARKS, "release")) and time.monotonic() < deadline:
            time.sleep(0.1)


def params(step):
    name = "user.alice.crash." + step + ".{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}"
    return {"taskName": name, "vo": "wlcg", "prodSourceLabel": "user", "nEvents": 5, "nEventsPerJob": 5}


with DAG("panda_crash", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"retries": 2, "retry_delay": timedelta(seconds=1), "poll_interval": 0.5}):
    SubmitTaskOperator(task_id="before_request", task_params=params("before"), pre_execute=slow_start)
    SubmitTaskOperator(task_id="after_accept", task_params=params("accept"), on_execute_callback=mark)
    SubmitTaskOperator(task_id="while_waiting", task_params=params("waiting"), on_execute_callback=mark)
    SubmitTaskOperator(task_id="while_deferred", task_params=params("deferred"), deferrable=True,
                       on_execute_callback=mark)
'''


def test_sigkill_at_each_step_leaves_one_panda_task(tmp_path, slow_server):
    """SIGKILL the worker process before the request, after the server accepted the task but before
    the id was stored, and while waiting; SIGKILL the triggerer while deferred. Airflow retries (or
    a new triggerer takes over): every step ends with exactly one PanDA task and a green run."""
    server = slow_server
    server.sim.add_rule(r"\.crash\.", ["hang"])  # the tasks run until the test lets them end
    dags, marks = tmp_path / "dags", tmp_path / "marks"
    dags.mkdir()
    marks.mkdir()
    (dags / "panda_crash.py").write_text(CRASH_DAG)
    cluster = Cluster(tmp_path / "home", dags, server, {"PANDA_CRASH_MARKS": str(marks)})
    try:
        cluster.wait_for_dag("panda_crash")
        server.panda.submit_delays[r"\.crash\.accept\."] = 8.0  # acted on, then answered late
        cluster.trigger("panda_crash", {})

        def pid(task: str, attempt: int = 1) -> int | None:
            path = marks / f"{task}.{attempt}"
            return int(path.read_text()) if path.exists() and path.read_text() else None

        def tasks(step: str):
            return [t for t in server.sim.tasks.values() if f".crash.{step}." in t.name]

        killed = {}
        # before the request: the first try sleeps before submitting
        killed["before_request"] = wait_until(lambda: pid("before_request"), 120, "before_request to start",
                                              cluster.procs)
        os.kill(killed["before_request"], signal.SIGKILL)
        assert not tasks("before")
        # after the server accepted the task, before the answer (so the id) reached the worker
        wait_until(lambda: tasks("accept"), 120, "the accepted submission", cluster.procs)
        killed["after_accept"] = pid("after_accept")
        os.kill(killed["after_accept"], signal.SIGKILL)
        # while waiting in the worker
        wait_until(lambda: [t for t in tasks("waiting") if t.status == "running"], 120, "the wait", cluster.procs)
        reads = tasks("waiting")[0].reads
        wait_until(lambda: tasks("waiting")[0].reads >= reads + 2, 120, "the worker to poll", cluster.procs)
        killed["while_waiting"] = pid("while_waiting")
        os.kill(killed["while_waiting"], signal.SIGKILL)
        # while deferred: the triggerer dies; a new one takes the trigger over
        wait_until(lambda: query(cluster.db, "SELECT 1 FROM trigger WHERE classpath LIKE '%PandaTaskTrigger' "
                                             "AND triggerer_id IS NOT NULL"), 120, "the deferral", cluster.procs)
        wait_until(lambda: tasks("deferred") and tasks("deferred")[0].reads >= 1, 120, "the triggerer to poll",
                   cluster.procs)
        os.killpg(cluster.procs["triggerer"].pid, signal.SIGKILL)
        cluster.procs["triggerer"].wait()
        cluster.start("triggerer", ["triggerer"])
        # every killed try has been retried and reattached: now let the tasks end
        for task in ("before_request", "after_accept", "while_waiting"):
            wait_until(lambda task=task: pid(task, 2), 180, f"the retry of {task}", cluster.procs)
        # each retried try (and the new triggerer) polls its task before the tasks may end
        for step in ("before", "accept", "waiting", "deferred"):
            wait_until(lambda step=step: tasks(step), 120, f"the {step} task", cluster.procs)
            reads = tasks(step)[0].reads
            wait_until(lambda step=step, reads=reads: tasks(step)[0].reads >= reads + 2, 180,
                       f"the {step} task to be polled again", cluster.procs)
        for step in ("before", "accept", "waiting", "deferred"):
            for task in tasks(step):
                server.sim.force(task.task_id, status="running", outcomes=["done"])
        state = wait_until(lambda: [s for (s,) in query(cluster.db, "SELECT state FROM dag_run") if s in
                                    ("success", "failed")], 240, "the run to end", cluster.procs)
        rows = query(cluster.db, "SELECT task_id, state, try_number FROM task_instance")
        assert state == ["success"], rows
        tries = {task: number for task, _, number in rows}
        assert all(tries[task] >= 2 for task in killed), tries
        counts = {step: len(tasks(step)) for step in ("before", "accept", "waiting", "deferred")}
        print(f"SIGKILL at each step: PanDA tasks per step {counts}, Airflow tries {tries}")
        assert counts == {"before": 1, "accept": 1, "waiting": 1, "deferred": 1}
    finally:
        cluster.stop()


ACTIONS_DAG = '''
from datetime import datetime
from airflow.sdk import DAG
from airflow_provider_panda.operators import SubmitTaskOperator


def params(step):
    name = "user.alice.actions." + step + ".{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}"
    return {"taskName": name, "vo": "atlas", "prodSourceLabel": "user", "noInput": True, "nEvents": 5,
            "nEventsPerJob": 5}


with DAG("panda_actions", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"poll_interval": 0.5, "retries": 0}):
    SubmitTaskOperator(task_id="sync_mark_failed", task_params=params("syncfail"))
    SubmitTaskOperator(task_id="deferred_mark_success", task_params=params("defsuccess"), deferrable=True)
    SubmitTaskOperator(task_id="sync_keep", task_params=params("keep"), cancel_on_kill=False)
    SubmitTaskOperator(task_id="deferred_clear", task_params=params("defclear"), deferrable=True)
'''


@pytest.mark.timeout(900)  # its bounded waits add up to more than the suite's 300 s on a busy machine
def test_user_actions_through_airflows_api(tmp_path, slow_server):
    """What a user's marks and clears do, through Airflow's REST API as the UI sends them: mark
    failed or success kills the PanDA task (cancel_on_kill, the default), in the worker and in the
    triggerer; without cancel_on_kill it is left running; a clear while deferred kills it and the
    cleared instance's next try re-executes that same task (one jediTaskID, attempt 1) to done."""
    server = slow_server
    server.sim.add_rule(r"\.actions\.", ["hang"])
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "panda_actions.py").write_text(ACTIONS_DAG)
    cluster = Cluster(tmp_path / "home", dags, server)
    try:
        cluster.wait_for_dag("panda_actions")
        cluster.trigger("panda_actions", {})

        def task(step: str):
            found = [t for t in server.sim.tasks.values() if f".actions.{step}." in t.name]
            assert len(found) <= 1, found  # never a second task for one instance
            return found[0] if found else None

        def ti_row(task_id: str) -> tuple | None:
            rows = query(cluster.db, "SELECT state, try_number, trigger_id FROM task_instance "
                         "WHERE dag_id='panda_actions' AND task_id=?", task_id)
            return rows[0] if rows else None

        def ti_state(task_id: str) -> str | None:
            row = ti_row(task_id)
            return row[0] if row else None

        def diagnose() -> str:
            t = task("defclear")
            return (f"deferred_clear (state, try, trigger): {ti_row('deferred_clear')}; PanDA task: "
                    f"{t and (t.task_id, t.status, t.attempt, t.reads)}\n"
                    f"{cluster.ti_log('panda_actions', 'deferred_clear')[-6000:]}\n"
                    f"{cluster.scheduler_says('panda_actions')}")

        steps = {"sync_mark_failed": "syncfail", "deferred_mark_success": "defsuccess", "sync_keep": "keep",
                 "deferred_clear": "defclear"}
        for task_id, step in steps.items():
            wait_until(lambda step=step: task(step) and task(step).status == "running" and task(step).reads >= 2,
                       180, f"{task_id} to wait on a running task", cluster.procs)
        for task_id in ("deferred_mark_success", "deferred_clear"):
            wait_until(lambda task_id=task_id: ti_state(task_id) == "deferred", 120, f"{task_id} to defer",
                       cluster.procs)
        [(run_id,)] = query(cluster.db, "SELECT run_id FROM dag_run WHERE dag_id='panda_actions'")
        path = f"dags/panda_actions/dagRuns/{run_id}/taskInstances"

        cluster.api("PATCH", f"{path}/sync_keep", {"new_state": "failed"})
        cluster.api("PATCH", f"{path}/sync_mark_failed", {"new_state": "failed"})
        cluster.api("PATCH", f"{path}/deferred_mark_success", {"new_state": "success"})
        killed = ["syncfail", "defsuccess"] if TRIGGER_ON_KILL else ["syncfail"]
        for step in killed:
            wait_until(lambda step=step: task(step).status == "aborted", 120, f"PanDA task {step} to be killed",
                       cluster.procs)
        wait_until(lambda: "is left running (cancel_on_kill is off)" in cluster.ti_log("panda_actions", "sync_keep"),
                   120, "sync_keep's on_kill", cluster.procs)
        assert task("keep").status == "running"

        before = task("defclear").attempt
        old_try = ti_row("deferred_clear")[1]
        cluster.api("POST", "dags/panda_actions/clearTaskInstances",
                    {"dry_run": False, "task_ids": ["deferred_clear"], "dag_run_id": run_id, "only_failed": False,
                     "reset_dag_runs": True})
        # The next try usually reads the task still running (JEDI has not acted on the kill yet),
        # reattaches and defers; its trigger then sees `aborted` within seconds, and only the event
        # hold ([panda] trigger_event_hold) keeps Airflow's scheduler from failing the resumed try on
        # the deferral's late executor 'success' (failed on try 2, task aborted at attempt 0: seen
        # under load before the hold). test_a_clears_kill_landing_after_the_next_try_reattached
        # makes that order certain.
        if TRIGGER_ON_KILL:  # the trigger's on_kill kills the task; the cleared instance re-executes it
            wait_until(lambda: task("defclear").attempt == before + 1 and task("defclear").status == "running",
                       180, "the cleared instance to re-execute its aborted task", cluster.procs, diagnose)
        else:  # Airflow < 3.3 has no trigger on_kill: the task runs on and the next try reattaches
            # the next try deferred and the triggerer started its trigger (the old one may poll on for a
            # while, so its reads prove nothing; the new try is known by its number in the trigger's name), and
            # that trigger has read the task: it is settled in, and the end below does not race the
            # LocalExecutor's bookkeeping of the deferral
            def redeferred():
                state, number, _ = ti_row("deferred_clear")
                return state == "deferred" and number > old_try and number

            new_try = wait_until(redeferred, 180, "the cleared instance to defer again", cluster.procs, diagnose)
            wait_until(lambda: f"/deferred_clear/-1/{new_try} (ID" in cluster.ti_log("panda_actions", "deferred_clear"),
                       180, "the triggerer to start its new trigger", cluster.procs, diagnose)
            reads = task("defclear").reads
            wait_until(lambda: task("defclear").reads > reads + 2, 180, "its new trigger to poll",
                       cluster.procs, diagnose)
        server.sim.force(task("defclear").task_id, status="running", outcomes=["done"])
        server.sim.force(task("keep").task_id, status="running", outcomes=["done"])
        if not TRIGGER_ON_KILL:
            server.sim.force(task("defsuccess").task_id, status="running", outcomes=["done"])
        wait_until(lambda: ti_state("deferred_clear") == "success", 180, "deferred_clear to succeed", cluster.procs,
                   diagnose)
        log = cluster.ti_log("panda_actions", "deferred_clear")
        if TRIGGER_ON_KILL:
            # the old trigger's on_kill says so in its trigger log, or in the triggerer's own log when the
            # trigger finished before the line reached the triggerer (see the fan-out test)
            killing = f"Killing PanDA task {task('defclear').task_id} "
            assert killing in log + cluster.logs["triggerer"].read_text(errors="replace")
            assert "re-executing it through PanDA's incremental execution" in log
        else:
            assert "Reattached to PanDA task" in log and task("defclear").attempt == before
        assert {s: task(s).status for s in steps.values()} == {
            "syncfail": "aborted", "defsuccess": "aborted" if TRIGGER_ON_KILL else "done", "keep": "done",
            "defclear": "done"}
        assert ti_state("sync_mark_failed") == "failed" and ti_state("deferred_mark_success") == "success"
        # the task log files a real worker and triggerer wrote hold no credential
        logs = [p for p in (tmp_path / "home" / "logs").rglob("*.log") if "task_id=" in str(p)]
        assert len(logs) >= 5, logs
        token = json.loads(cluster.env["AIRFLOW_CONN_PANDA_DEFAULT"])["password"]
        assert token and not [p for p in logs if token in p.read_text(errors="replace")]
    finally:
        cluster.stop()


@pytest.mark.timeout(900)  # 50 deferred waits moved between triggerers: over 300 s on a busy machine
def test_a_second_triggerer_takes_the_waits_over(tmp_path, slow_server):
    """Airflow's triggerer HA: 50 deferred waits (panda_fan_out) held by one triggerer; a second
    triggerer starts; SIGKILL the first. The second takes every trigger over, every wait ends with
    its task, and each map index has exactly one PanDA task."""
    server = slow_server
    n = 50
    server.sim.add_rule(r"\.fan_out\.ha\.", ["hang"])
    cluster = Cluster(tmp_path / "home", EXAMPLES, server, {
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6", "AIRFLOW__CORE__PARALLELISM": "16"})
    try:
        cluster.wait_for_dag("panda_fan_out")
        cluster.trigger("panda_fan_out", {"tag": "ha", "n_tasks": n})

        def held() -> dict:
            rows = query(cluster.db, "SELECT triggerer_id, COUNT(*) FROM trigger WHERE classpath LIKE "
                                     "'%PandaTaskTrigger' GROUP BY triggerer_id")
            return dict(rows)

        first = wait_until(lambda: (h := held()) and len(h) == 1 and None not in h and sum(h.values()) == n
                           and next(iter(h)), 300, f"{n} deferred waits in the first triggerer", cluster.procs)
        tasks = [t for t in server.sim.tasks.values() if ".fan_out.ha." in t.name]
        assert len(tasks) == n
        cluster.start("triggerer2", ["triggerer"])
        wait_until(lambda: len(query(cluster.db, "SELECT id FROM job WHERE job_type='TriggererJob' "
                                                 "AND state='running'")) >= 2, 120, "the second triggerer",
                   cluster.procs)
        os.killpg(cluster.procs["triggerer"].pid, signal.SIGKILL)
        cluster.procs["triggerer"].wait()
        del cluster.procs["triggerer"]
        wait_until(lambda: (h := held()) and first not in h and None not in h and sum(h.values()) == n, 180,
                   "the second triggerer to hold every wait", cluster.procs)
        reads = {t.task_id: t.reads for t in tasks}
        wait_until(lambda: all(t.reads > reads[t.task_id] for t in tasks), 120,
                   "the second triggerer to poll every task", cluster.procs)
        for task in tasks:
            server.sim.force(task.task_id, status="running", outcomes=["done"])
        state = wait_until(lambda: [s for (s,) in query(cluster.db, "SELECT state FROM dag_run WHERE "
                                                        "dag_id='panda_fan_out'") if s in ("success", "failed")],
                           300, "the run to end", cluster.procs)
        rows = query(cluster.db, "SELECT map_index, state FROM task_instance WHERE dag_id='panda_fan_out' "
                                 "AND task_id='submit'")
        assert state == ["success"] and len(rows) == n and {s for _, s in rows} == {"success"}, rows
        ha = [t for t in server.sim.tasks.values() if ".fan_out.ha." in t.name]
        assert len(ha) == n and len({t.name for t in ha}) == n and all(t.attempt == 0 for t in ha)
    finally:
        cluster.stop()


RACE_DAG = RACE_OPERATORS + '''
from datetime import datetime
from airflow.sdk import DAG


def params(step):
    name = "user.alice.race." + step + ".{{ dag_run.run_after.strftime('%Y%m%dT%H%M%S%f') }}"
    return {"taskName": name, "vo": "atlas", "prodSourceLabel": "user", "noInput": True, "nEvents": 5,
            "nEventsPerJob": 5}


with DAG("panda_clear_race", schedule=None, start_date=datetime(2026, 1, 1),
         default_args={"poll_interval": 0.5, "retries": 0, "deferrable": True}):
    Submit(task_id="held", task_params=params("held"))
    SubmitWithoutHold(task_id="not_held", task_params=params("notheld"))
'''


@pytest.mark.skipif(not TRIGGER_ON_KILL, reason="Airflow < 3.3 calls no trigger on_kill: a clear kills nothing")
@pytest.mark.timeout(900)
def test_a_clears_kill_landing_after_the_next_try_reattached(tmp_path):
    """The race of a clear with cancel_on_kill, made certain: the old trigger's kill is accepted but
    JEDI does not act on it (the simulated clock stands still) until the cleared instance's next try
    has read the task ``running``, reattached and deferred; only then does the task go ``aborted``.
    That try's trigger then sees ``aborted`` seconds after deferral, and the resumed try re-executes
    the same task once (one jediTaskID, attempt 1) to done: the README's promise.

    The instance whose trigger fires at once (the event hold taken out) is the control: it meets
    Airflow's race (the deferring worker's late executor 'success' fails the resumed instance,
    "state mismatch"), which is what the user-actions test met under load before the hold: the
    instance ``failed`` on try 2, its trigger's ``failure`` event (``reattached: True``) followed by
    no resumed run, its PanDA task ``aborted`` at attempt 0. Whether the control meets it depends
    on timing; either way it must end in one of those two ways."""
    from airflow_provider_panda.testing.server import LocalPandaServer

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "panda_clear_race.py").write_text(RACE_DAG)
    with LocalPandaServer(step=0.5) as server:  # the kill lands within a second once JEDI acts
        server.sim.add_rule(r"\.race\.", ["hang"])
        _clear_race(server, Cluster(tmp_path / "home", dags, server))


def _clear_race(server, cluster: Cluster) -> None:
    # the control is waited for first: the clock goes soon after its next try deferred
    steps = {"not_held": "notheld", "held": "held"}
    try:
        cluster.wait_for_dag("panda_clear_race")
        cluster.trigger("panda_clear_race", {})

        def task(task_id: str):
            found = [t for t in server.sim.tasks.values() if f".race.{steps[task_id]}." in t.name]
            assert len(found) <= 1, found  # never a second task for one instance
            return found[0] if found else None

        def ti_row(task_id: str) -> tuple | None:
            rows = query(cluster.db, "SELECT state, try_number FROM task_instance "
                         "WHERE dag_id='panda_clear_race' AND task_id=?", task_id)
            return rows[0] if rows else None

        def diagnose() -> str:
            return "\n".join(f"{task_id}: TI {ti_row(task_id)}; PanDA task "
                             f"{(t := task(task_id)) and (t.task_id, t.status, t.attempt, t.path)}\n"
                             f"{cluster.ti_log('panda_clear_race', task_id)[-3000:]}" for task_id in steps
                             ) + "\n" + cluster.scheduler_says("panda_clear_race")

        for task_id in steps:
            wait_until(lambda task_id=task_id: (t := task(task_id)) and t.status == "running" and t.reads >= 2
                       and ti_row(task_id) == ("deferred", 1), 180, f"{task_id} to defer on its running task",
                       cluster.procs, diagnose)
        [(run_id,)] = query(cluster.db, "SELECT run_id FROM dag_run WHERE dag_id='panda_clear_race'")
        ids = {task_id: task(task_id).task_id for task_id in steps}

        server.sim.hold_after.add("kill")  # JEDI has not acted on a kill until the clock goes again
        try:
            cluster.api("POST", "dags/panda_clear_race/clearTaskInstances",
                        {"dry_run": False, "task_ids": list(steps), "dag_run_id": run_id, "only_failed": False,
                         "reset_dag_runs": True})
            for task_id in steps:
                # the old trigger's on_kill: the kill is accepted, the task still reads running
                wait_until(lambda task_id=task_id: task(task_id).path[:1] == ["toabort"], 180,
                           f"{task_id}'s old trigger to kill its task", cluster.procs, diagnose)
                # the next try read it running, reattached and deferred
                wait_until(lambda task_id=task_id: ti_row(task_id) == ("deferred", 2) and
                           f"Reattached to PanDA task {ids[task_id]} (running)"
                           in cluster.ti_log("panda_clear_race", task_id),
                           180, f"{task_id}'s next try to reattach and defer", cluster.procs, diagnose)
            assert all(task(task_id).status == "running" and task(task_id).attempt == 0 for task_id in steps)
        finally:
            server.sim.hold_after.discard("kill")
            server.sim.clock.freeze(False)  # JEDI acts: toabort, aborted

        def settled(task_id: str) -> bool:
            """The instance ended; a re-executed task is let end done first."""
            t = task(task_id)
            if t.attempt == 1 and t.status == "running" and t.outcome == "hang":
                server.sim.force(t.task_id, status="running", outcomes=["done"])
            return ti_row(task_id)[0] in ("success", "failed")

        for task_id in steps:
            wait_until(lambda task_id=task_id: settled(task_id), 240, f"{task_id} to end", cluster.procs, diagnose)
        mismatches = dict(query(cluster.db, "SELECT task_id, COUNT(*) FROM log WHERE event='state mismatch' "
                                            "AND dag_id='panda_clear_race' GROUP BY task_id"))
        log = cluster.ti_log("panda_clear_race", "held")
        assert ti_row("held") == ("success", 2), diagnose()
        assert "held" not in mismatches, mismatches
        assert "was aborted while this try waited on it" in log  # the reattached try's re-execution
        assert (task("held").task_id, task("held").status, task("held").attempt) == (ids["held"], "done", 1)
        control = (ti_row("not_held"), task("not_held").status, task("not_held").attempt)
        print(f"control without the event hold: {control}, state mismatches {mismatches.get('not_held', 0)}")
        if mismatches.get("not_held"):  # Airflow's race met: failed on try 2, the resumed try cut short
            assert control[0] == ("failed", 2), control
        else:  # not met this time: as the held instance
            assert control == (("success", 2), "done", 1), control
    finally:
        cluster.stop()
