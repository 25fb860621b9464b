"""Airflow's UI in a real browser (Debian's headless Chromium), against ONE Airflow cluster (api-server,
scheduler, dag-processor, triggerer) and the local PanDA server for the whole module:

1. a user creates a PanDA connection with the form, tests it with the list's "Test" button (green,
   with our message), runs the main example DAG ``panda_submit_and_wait`` with it, follows the task's
   "PanDA monitor" link, and sees the done task in the PanDA tab and the run's summary;
2. the PanDA tab of a DAG run started with the cluster (``panda_view_browser``, on a connection from
   the environment): a RUNNING task, a FAILED-THEN-RETRIED one (auto_retry_policy: its jobs killed for
   memory at SITE_A, retried with more), a MAPPED one (labelled by its PanDA task), the run summary;
3. the view's endpoints in the same api-server: 16 concurrent viewers of a task cost PanDA one read, a
   user Airflow refuses the DAG gets 403 (no login: 401), and no secret of the connection is in any
   answer.

Slow (real Airflow processes): run by ``make test-browser``, which installs chromium and
chromium-driver; skipped elsewhere. Screenshots: test-artifacts/browser/ (the retried task's view is
also docs/images/panda-view.png, kept when ``UPDATE_DOCS_IMAGE=1``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest

pytestmark = [pytest.mark.skipif(os.environ.get("BROWSER_TEST") != "1", reason="browser tier: make test-browser"),
              pytest.mark.timeout(900)]  # only limits a hang: the waits below have their own

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DOCS_IMAGE = ROOT / "docs" / "images" / "panda-view.png"
DAG_ID = "panda_submit_and_wait"
CONN_ID = "panda_default"
VIEW_DAG = "panda_view_browser"
VIEW_CONN = "panda_view"
#: In the view DAG's connection (an extra the hook ignores): must never reach a browser.
REFRESH_SECRET = "refresh-s3cret-never-shown"
PASSWORDS = {"admin": "admin-pw-browser", "outsider": "outsider-pw-browser"}
#: Jobs killed for memory, as the pilot reports them, at one site.
MEMORY = {"pilotErrorCode": 1212, "pilotErrorDiag": "Payload ran out of memory", "transExitCode": 0,
          "exeErrorCode": 0, "exeErrorDiag": None, "computingSite": "SITE_A"}
FAN = ("electrons", "muons")

VIEW_DAG_FILE = '''
import json
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_panda.operators import SubmitTaskOperator
from airflow_provider_panda.retry_policy import DefaultRetryPolicy

BASE = json.loads({base!r})
COMMON = dict(panda_conn_id="{conn}", poll_interval=1)
with DAG("{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    SubmitTaskOperator(task_id="running", task_params={{**BASE, "taskName": "user.alice.browser.running"}},
                       deferrable=True, **COMMON)
    SubmitTaskOperator(task_id="retried", task_params={{**BASE, "taskName": "user.alice.browser.retried"}},
                       auto_retry_policy=DefaultRetryPolicy(), **COMMON)
    SubmitTaskOperator.partial(task_id="fan", deferrable=True, **COMMON).expand(
        task_params=[{{**BASE, "taskName": f"user.alice.browser.fan.{{name}}"}} for name in {fan!r}])
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """``predicate()``'s first truthy answer, polled; a timeout only limits a hang."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Airflow:
    """api-server (on 127.0.0.1 only), scheduler, dag-processor and triggerer as processes; stopped by PID."""

    def __init__(self, home: Path, extra_env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home, self.db = home, home / "airflow.db"
        dags = home / "dags"
        dags.mkdir(parents=True)
        for name in (f"{DAG_ID}.py", "_common.py", "panda_task.json"):
            shutil.copy(ROOT / "example_dags" / name, dags / name)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps(PASSWORDS))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PANDA"))}
        self.env.update({
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": "tests.view_auth.RefusingAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,outsider:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            # a task's calls to the api-server wait out a busy machine (SQLite, 2 cores) instead of failing
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1", "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1", "PANDA_EXAMPLE_POLL": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **extra_env,
        })
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True,
                       capture_output=True, cwd=ROOT)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        for name, args in [("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port)]),
                           ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]),
                           ("triggerer", ["triggerer"])]:
            self.logs[name] = home / f"{name}.log"
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env,
                                                stdout=open(self.logs[name], "a"), stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd=ROOT)

    def query(self, sql: str, *args: object) -> list[tuple]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def alive(self) -> None:
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited: {self.logs[dead[0]].read_text()[-2000:]}")

    def token(self, user: str) -> str:
        import requests

        answer = requests.post(f"{self.url}/auth/token", json={"username": user, "password": PASSWORDS[user]},
                               timeout=30)
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["access_token"]

    def trigger(self, token: str, dag_id: str, conf: dict | None = None) -> str:
        """Trigger ``dag_id`` through the REST API once the dag-processor has it; its run_id."""
        import requests

        headers = {"Authorization": f"Bearer {token}"}

        def parsed() -> bool:
            self.alive()
            return requests.get(f"{self.url}/api/v2/dags/{dag_id}", headers=headers, timeout=30).ok

        wait_for(parsed, 180, 0.5, f"the dag-processor to parse {dag_id}")
        answer = requests.post(f"{self.url}/api/v2/dags/{dag_id}/dagRuns", headers=headers, timeout=30,
                               json={"logical_date": None, "conf": conf or {}})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["dag_run_id"]

    def ti_state(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str | None:
        """The task instance's state; raises when it failed (its log in the message)."""
        self.alive()
        rows = self.query("SELECT state FROM task_instance WHERE dag_id=? AND run_id=? AND task_id=? AND map_index=?",
                          dag_id, run_id, task_id, map_index)
        state = rows[0][0] if rows else None
        if state in ("failed", "upstream_failed") and task_id != "running":
            logs = sorted(self.home.glob(f"logs/dag_id={dag_id}/run_id=*/task_id={task_id}/**/*.log"))
            log = logs[-1] if logs else self.logs["scheduler"]
            raise AssertionError(f"{task_id}[{map_index}] {state}: {log.read_text()[-3000:]}")
        return state

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def panda():
    from airflow_provider_panda.testing.server import LocalPandaServer

    # tasks take seconds, as real ones take minutes (a trigger firing within a second of deferral
    # races the LocalExecutor's bookkeeping, see test_real_airflow)
    with LocalPandaServer(step=2.0) as server:
        server.sim.add_rule(r"browser\.running$", ["hang"])
        server.sim.add_rule(r"browser\.retried$", ["failed", "done"])
        server.sim.add_job_errors(r"browser\.retried$", [MEMORY])
        yield server


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, panda):
    """The cluster; the view DAG is triggered as soon as it is parsed, so it runs beside the form's steps."""
    home = tmp_path_factory.mktemp("browser-airflow")
    view_conn = panda.connection("user", refresh_token=REFRESH_SECRET)
    base = {"uniqueTaskName": True, "vo": "atlas", "prodSourceLabel": "user", "taskType": "anal", "noInput": True,
            "nEvents": 40, "nEventsPerJob": 5, "ramCount": 2000, "site": "SITE_A",
            "jobParameters": [{"type": "constant", "value": "echo hello"}],
            "log": {"type": "template", "param_type": "log", "value": "user.alice.log.${SN}.tgz"}}
    cluster = Airflow(home, {f"AIRFLOW_CONN_{VIEW_CONN.upper()}": json.dumps(view_conn)})
    try:
        (home / "dags" / f"{VIEW_DAG}.py").write_text(
            VIEW_DAG_FILE.format(base=json.dumps(base), conn=VIEW_CONN, dag_id=VIEW_DAG, fan=FAN))
        wait_for(lambda: cluster.alive() or _answers(cluster.url), 180, 0.5, "the api-server")
        cluster.admin = cluster.token("admin")
        cluster.view_run = cluster.trigger(cluster.admin, VIEW_DAG)
        cluster.secrets = [view_conn["password"], REFRESH_SECRET]
        yield cluster
    finally:
        cluster.stop()


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/api/v2/monitor/health", timeout=2).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def browser(airflow):
    """Chromium, logged in as ``admin`` (the api-server reads its JWT from the ``_token`` cookie)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,860"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # no screenshot of an earlier run left to mislead
    try:
        driver.get(f"{airflow.url}/api/v2/version")
        driver.add_cookie({"name": "_token", "value": airflow.admin, "path": "/"})
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    if name.startswith("failure"):
        (ARTIFACTS / f"{name}.html").write_text(driver.page_source)
    return path


class Page:
    """Waits on what the browser shows (conditions only)."""

    def __init__(self, driver, airflow) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.airflow = driver, airflow
        self.wait = WebDriverWait(driver, 120, poll_frequency=0.2)

    def visible(self, xpath: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.visibility_of_element_located((By.XPATH, xpath)))

    def clickable(self, xpath: str):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        return self.wait.until(ec.element_to_be_clickable((By.XPATH, xpath)))

    def panda_tab(self, path: str, *needles: str) -> str:
        """Open Airflow's page ``path`` (a PanDA tab), wait until the PanDA iframe shows every needle;
        its text (the driver is back on the page, for a screenshot)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.driver.get(f"{self.airflow.url}{path}")
        frame = self.wait.until(ec.presence_of_element_located((By.XPATH, "//iframe[contains(@src, '/panda/view/')]")))
        self.driver.switch_to.frame(frame)
        try:
            self.visible("//div[contains(@class, 'panda-task')] | //table[@class='summary'] | //p")
            text = self.wait.until(lambda d: (t := d.find_element(By.TAG_NAME, "body").text)
                                   and all(n in t for n in needles) and t)
        finally:
            self.driver.switch_to.default_content()
        return text


def view_api(airflow, path: str, user: str = "admin") -> dict:
    import requests

    token = airflow.admin if user == "admin" else airflow.token(user)
    answer = requests.get(f"{airflow.url}/panda/api/{path}", headers={"Authorization": f"Bearer {token}"},
                          timeout=60)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.json()


# --- 1. the connection made in the form --------------------------------------------------------------


def test_connection_made_in_the_form_tests_green_runs_the_example_and_shows_in_the_panda_tab(
        panda, airflow, browser):
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    page = Page(browser, airflow)

    # --- Add Connection, as a user would: type PanDA, host, token, VO, monitor URL; Save -----------
    browser.get(f"{airflow.url}/connections")
    try:
        page.clickable("//button[contains(., 'Add Connection')]").click()
        page.visible("//input[@name='connection_id']").send_keys(CONN_ID)
        kind = page.visible("//input[@role='combobox']")
        kind.click()
        kind.send_keys("PanDA")
        page.clickable("//*[@role='option'][normalize-space()='PanDA']").click()
        # the relabelled standard fields: "PanDA server URL" and "OIDC id token"
        page.visible("//*[contains(normalize-space(), 'PanDA server URL')]")
        assert not browser.find_elements(By.XPATH, "//input[@name='login']"), "login should be hidden"
        page.visible("//input[@name='host']").send_keys(panda.url)
        page.visible("//input[@name='password']").send_keys(panda.token())
        page.clickable("//button[contains(., 'Extra Fields') and not(contains(., 'JSON'))]").click()
        page.visible("//input[@name='element_vo']").send_keys("atlas")
        page.visible("//input[@name='element_monitor_url']").send_keys(panda.url + "/monitor")
        refresh = page.visible("//input[@name='element_refresh_token']")
        assert refresh.get_attribute("type") == "password", "the refresh token must be masked"
        # auth is a select (react-select combobox) of the three modes, not free text
        assert browser.find_elements(By.XPATH, "//div[@id='element_auth']//input[@role='combobox']")
        shot(browser, "1-connection-form")
        page.clickable("//button[normalize-space()='Save']").click()
        wait_for(lambda: airflow.query("SELECT extra FROM connection WHERE conn_id=?", CONN_ID), 60, 0.2,
                 "the saved connection")
        shot(browser, "2-connection-saved")
    except Exception:
        shot(browser, "failure-connection-form")
        raise
    (port,), = airflow.query("SELECT port FROM connection WHERE conn_id=?", CONN_ID)
    assert port is None  # what the form stores for the hidden port: the list's Test posts 0

    # --- the list's "Test" button: green, with our message (Airflow >= 3.2 refused port 0 vs null) ------
    try:
        browser.get(f"{airflow.url}/connections")
        row = f"//tr[.//*[normalize-space()='{CONN_ID}']]"
        page.clickable(f"{row}//button[@aria-label='Test Connection']").click()
        toast = page.visible("//*[contains(normalize-space(), 'the credentials were accepted')]")
        assert f"Connected to {panda.url}" in toast.text, toast.text
        shot(browser, "2b-connection-test")
    except Exception:
        shot(browser, "failure-connection-test")
        raise

    saved = json.loads(subprocess.run([sys.executable, "-m", "airflow", "connections", "get", CONN_ID, "-o", "json"],
                                      env=airflow.env, check=True, capture_output=True, text=True).stdout)[0]
    stored = saved["extra_dejson"]  # decrypted by the CLI (the database holds it encrypted)
    assert saved["conn_type"] == "panda" and saved["host"] == panda.url and stored["vo"] == "atlas", stored
    # what the form really stores: the fields left alone are there as null (the hook reads them as defaults)
    untouched = {k for k, v in stored.items() if v is None}
    assert {"timeout", "token_file", "auth"} <= untouched, stored

    # --- run the main example with that connection (none in the environment) ----------------------
    assert f"AIRFLOW_CONN_{CONN_ID.upper()}" not in airflow.env
    run_id = airflow.trigger(airflow.admin, DAG_ID, {"tag": "browser"})

    def run_ended():
        airflow.alive()
        rows = airflow.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?", DAG_ID, run_id)
        return rows and rows[0][0] in ("success", "failed") and rows[0][0]

    state = wait_for(run_ended, 240, 0.5, "the example's run")
    tis = airflow.query("SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=?", DAG_ID, run_id)
    assert state == "success", (tis, airflow.logs["scheduler"].read_text()[-3000:])
    tasks = [t for t in panda.sim.tasks.values() if ".browser." in t.name and "airflow" in t.name]
    assert len(tasks) == 1 and tasks[0].status == "done"
    jedi_task_id = tasks[0].task_id
    run = quote(run_id, safe="")

    # --- the task's "PanDA monitor" link lands on the local server's monitor page ------------------
    try:
        browser.get(f"{airflow.url}/dags/{DAG_ID}/runs/{run}/tasks/submit")
        page.clickable("//*[(self::button or self::a or @role='tab') and normalize-space()='Details']").click()
        link = page.clickable("//a[contains(normalize-space(), 'PanDA monitor')]")
        shot(browser, "3-task-extra-link")
        href = link.get_attribute("href")
        assert href == f"{panda.url}/monitor/task/{jedi_task_id}/", href
        handles = set(browser.window_handles)
        link.click()
        page.wait.until(lambda d: len(d.window_handles) > len(handles) or d.current_url.startswith(panda.url))
        new = [h for h in browser.window_handles if h not in handles]
        if new:
            browser.switch_to.window(new[0])
        page.wait.until(lambda d: d.current_url.startswith(f"{panda.url}/monitor/task/{jedi_task_id}"))
        page.visible(f"//*[contains(normalize-space(), '{jedi_task_id}')]")
        assert f"PanDA task {jedi_task_id}" in browser.title
        shot(browser, "4-monitor-page")
        if new:
            browser.close()
            browser.switch_to.window(next(iter(handles)))
    except Exception:
        shot(browser, "failure-monitor-link")
        raise

    # --- the PanDA tab: the done task's progress and jobs, the run's summary ---------------------------
    n = tasks[0].n_jobs
    try:
        text = page.panda_tab(f"/dags/{DAG_ID}/runs/{run}/tasks/submit/plugin/panda", f"PanDA task {jedi_task_id}",
                              f"{n} of {n} input files finished, 0 failed (100%)")
        assert "done" in text and "Jobs by status" in text and "PanDA monitor" in text, text
        shot(browser, "5-panda-view-done")
        # submit and summarise both name the PanDA task (summarise reads it through XCom)
        page.panda_tab(f"/dags/{DAG_ID}/runs/{run}/plugin/panda-run", "2 of 2 ended", "summarise")
        shot(browser, "6-panda-run-summary-done")
    except Exception:
        shot(browser, "failure-panda-view-done")
        raise
    print(f"\nbrowser: form, Test, run, monitor link and the done task's tab in {time.monotonic() - started:.0f} s")


# --- 2. the PanDA tab: running, failed-then-retried, mapped; the run summary -------------------------


def _sim_task(panda, name: str):
    return next((t for t in panda.sim.tasks.values() if t.name == name), None)


def test_the_panda_tab_of_a_running_a_retried_and_a_mapped_task(panda, airflow, browser):
    started = time.monotonic()
    page = Page(browser, airflow)
    run = quote(airflow.view_run, safe="")
    base = f"/dags/{VIEW_DAG}/runs/{run}"

    # RUNNING: deferred in Airflow, its 8 jobs running in PanDA
    def runs():
        assert airflow.ti_state(VIEW_DAG, airflow.view_run, "running") not in ("failed", "upstream_failed")
        return (t := _sim_task(panda, "user.alice.browser.running")) and t.status == "running" and t

    running = wait_for(runs, 180, 0.5, "the running task to run")
    wait_for(lambda: airflow.ti_state(VIEW_DAG, airflow.view_run, "running") == "deferred", 120, 0.5,
             "the running task to defer")
    try:
        text = page.panda_tab(f"{base}/tasks/running/plugin/panda", f"PanDA task {running.task_id}", "running",
                              "0 of 8 input files finished, 0 failed (0%)", "Airflow: deferred")
        assert "Jobs by status" in text and "PanDA monitor" in text, text
        shot(browser, "7-panda-view-running")
    except Exception:
        shot(browser, "failure-panda-view-running")
        raise

    # FAILED THEN RETRIED: attempt 0's 8 jobs killed for memory at SITE_A, the policy retried with more
    for task_id, index in [("retried", -1), ("fan", 0), ("fan", 1)]:
        state = wait_for(lambda t=task_id, i=index: (s := airflow.ti_state(VIEW_DAG, airflow.view_run, t, i))
                         in ("success", "failed", "upstream_failed") and s, 240, 0.5, f"{task_id}[{index}]")
        assert state == "success", (task_id, index, state, airflow.logs["scheduler"].read_text()[-2000:])
    retried = _sim_task(panda, "user.alice.browser.retried")
    assert retried.attempt == 1 and retried.status == "done" and retried.params["ramCount"] == 3000
    [attempt] = view_api(airflow, f"dags/{VIEW_DAG}/runs/{run}/tasks/retried")["tasks"][0]["attempts"]
    assert attempt["action"] == "retry" and attempt["retried_with"] == {"ramCount": 3000}, attempt
    try:
        text = page.panda_tab(f"{base}/tasks/retried/plugin/panda", f"PanDA task {retried.task_id}",
                              "8 of 8 input files finished, 0 failed (100%)", "PanDA attempt 1", "Attempts",
                              "ramCount=3000", "SITE_A ×8")
        assert "1212" in text and "memory" in text.lower(), text  # the error, and the attempt's reason
        assert str(attempt["reason"])[:40] in text, (attempt, text)
        path = shot(browser, "8-panda-view-retried")
        if os.environ.get("UPDATE_DOCS_IMAGE") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, DOCS_IMAGE)
    except Exception:
        shot(browser, "failure-panda-view-retried")
        raise

    # MAPPED: fan[0] is labelled by its PanDA task's name, in Airflow's list and in the tab
    label = f"user.alice.browser.fan.{FAN[0]}"
    fan0 = _sim_task(panda, label)
    labels = airflow.query("SELECT rendered_map_index FROM task_instance WHERE dag_id=? AND run_id=? "
                           "AND task_id='fan' ORDER BY map_index", VIEW_DAG, airflow.view_run)
    assert labels == [(label,), (f"user.alice.browser.fan.{FAN[1]}",)], labels
    try:
        browser.get(f"{airflow.url}{base}/tasks/fan/mapped")
        page.visible(f"//*[normalize-space()='{label}']")
        shot(browser, "9-mapped-instances")
        text = page.panda_tab(f"{base}/tasks/fan/mapped/0/plugin/panda", f"fan [{label}]",
                              f"PanDA task {fan0.task_id}", "8 of 8 input files finished")
        assert f"PanDA task {_sim_task(panda, 'user.alice.browser.fan.' + FAN[1]).task_id}" not in text, text
        shot(browser, "10-panda-view-mapped")
    except Exception:
        shot(browser, "failure-panda-view-mapped")
        raise
    print(f"\nbrowser: running, retried and mapped tabs in {time.monotonic() - started:.0f} s")


# --- 3. the endpoints: one read for many viewers, 403 for a refused user, no secret ------------------


def test_many_viewers_cost_one_read_a_refused_user_gets_403_and_no_secret_is_sent(panda, airflow, browser):
    import requests

    page = Page(browser, airflow)
    run = quote(airflow.view_run, safe="")
    # end the running task, so that nothing but the view reads PanDA from here on
    running = _sim_task(panda, "user.alice.browser.running")
    panda.sim.force(running.task_id, status="failed")
    wait_for(lambda: airflow.alive() or airflow.query("SELECT state FROM dag_run WHERE dag_id=? AND run_id=?",
                                                      VIEW_DAG, airflow.view_run)[0][0] in ("success", "failed"),
             180, 0.5, "the view DAG's run to end")

    # 16 viewers of fan[1] (nobody looked at it yet), all at once: PanDA is read once
    admin = {"Authorization": f"Bearer {airflow.admin}"}
    api = f"{airflow.url}/panda/api/dags/{VIEW_DAG}/runs/{run}"
    before = dict(panda.panda.requests)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{api}/tasks/fan?map_index=1", headers=admin, timeout=60),
                                range(16)))
    assert all(a.status_code == 200 for a in answers), answers[0].text
    for call in ("task/get_detailed_info", "task/get_details", "task/get_job_descriptions"):
        assert panda.panda.requests[call] - before.get(call, 0) == 1, (call, dict(panda.panda.requests), before)
    assert panda.panda.requests["task/get_job_ids"] == before.get("task/get_job_ids", 0)  # never the job list
    assert [t["map_index"] for t in answers[0].json()["tasks"]] == [1]

    # who may see it: a user Airflow refuses the DAG gets 403, no login 401; PanDA read for neither
    outsider = {"Authorization": f"Bearer {airflow.token('outsider')}"}
    before = sum(panda.panda.requests.values())
    for path in (f"api/dags/{VIEW_DAG}/runs/{run}/tasks/retried", f"view/dags/{VIEW_DAG}/runs/{run}",
                 f"view/dags/{VIEW_DAG}/runs/{run}/tasks/fan?map_index=0"):
        refused = requests.get(f"{airflow.url}/panda/{path}", headers=outsider, timeout=30)
        assert refused.status_code == 403, (path, refused.status_code, refused.text)
        assert requests.get(f"{airflow.url}/panda/{path}", timeout=30).status_code == 401
    assert sum(panda.panda.requests.values()) == before

    # the run summary: every PanDA task of the run, the mapped ones by their label
    try:
        text = page.panda_tab(f"/dags/{VIEW_DAG}/runs/{run}/plugin/panda-run", "4 of 4 ended",
                              f"fan [user.alice.browser.fan.{FAN[0]}]", f"fan [user.alice.browser.fan.{FAN[1]}]")
        assert "retried" in text and "running" in text, text
        shot(browser, "11-panda-run-summary")
    except Exception:
        shot(browser, "failure-panda-run-summary")
        raise

    # no secret of the connection in anything the browser gets: the API's answers and the pages' HTML
    bodies = [a.text for a in answers]
    bodies += [requests.get(f"{airflow.url}/panda/{p}", headers=admin, timeout=60).text for p in (
        f"api/dags/{VIEW_DAG}/runs/{run}", f"view/dags/{VIEW_DAG}/runs/{run}",
        f"view/dags/{VIEW_DAG}/runs/{run}/tasks/retried?map_index=-1")]
    for body in bodies:
        for secret in airflow.secrets:
            assert secret not in body
        assert "Bearer" not in body and "PRIVATE KEY" not in body
