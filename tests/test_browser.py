"""Airflow's UI in a real browser (Debian's headless Chromium): a user creates a PanDA connection with
the form, runs the main example DAG ``panda_submit_and_wait`` with it (no environment connection), and
follows the task's "PanDA monitor" link to the local server's monitor page.

Slow (real api-server, scheduler, dag-processor, triggerer): run by ``make test-browser``, which
installs chromium and chromium-driver; skipped elsewhere. Screenshots: test-artifacts/browser/.
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
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("BROWSER_TEST") != "1", reason="browser tier: make test-browser")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
DAG_ID = "panda_submit_and_wait"
CONN_ID = "panda_default"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Airflow:
    """api-server (on 127.0.0.1 only), scheduler, dag-processor and triggerer as processes; stopped by PID."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home, self.db = home, home / "airflow.db"
        dags = home / "dags"
        dags.mkdir(parents=True)
        for name in (f"{DAG_ID}.py", "_common.py", "panda_task.json"):
            shutil.copy(ROOT / "example_dags" / name, dags / name)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PANDA"))}
        self.env.update({
            "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1", "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1", "PANDA_EXAMPLE_POLL": "1",
        })
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.env, check=True,
                       capture_output=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        for name, args in [("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.port)]),
                           ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"]),
                           ("triggerer", ["triggerer"])]:
            self.logs[name] = home / f"{name}.log"
            self.procs[name] = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.env,
                                                stdout=open(self.logs[name], "a"), stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def query(self, sql: str, *args: object) -> list[tuple]:
        if not self.db.exists():
            return []
        with sqlite3.connect(self.db, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def alive(self) -> None:
        dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
        if dead:
            raise AssertionError(f"{dead} exited: {self.logs[dead[0]].read_text()[-2000:]}")

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


@pytest.fixture
def panda():
    from airflow_provider_panda.testing.server import LocalPandaServer

    # tasks take seconds, as real ones take minutes (a trigger firing within a second of deferral
    # races the LocalExecutor's bookkeeping, see test_real_airflow)
    with LocalPandaServer(step=2.0) as server:
        yield server


@pytest.fixture
def airflow(tmp_path):
    cluster = Airflow(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    if name.startswith("failure"):
        (ARTIFACTS / f"{name}.html").write_text(driver.page_source)


def test_connection_made_in_the_form_runs_the_example_and_its_monitor_link_opens(panda, airflow, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    started = time.monotonic()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # no screenshot of an earlier run left to mislead
    wait = WebDriverWait(browser, 120, poll_frequency=0.2)

    def visible(xpath: str):
        return wait.until(ec.visibility_of_element_located((By.XPATH, xpath)))

    def clickable(xpath: str):
        return wait.until(ec.element_to_be_clickable((By.XPATH, xpath)))

    def up(_driver) -> bool:
        airflow.alive()
        try:
            with socket.create_connection(("127.0.0.1", airflow.port), timeout=1):
                return True
        except OSError:
            return False

    WebDriverWait(browser, 120, poll_frequency=0.5).until(up)

    # --- Add Connection, as a user would: type PanDA, host, token, VO, monitor URL; Save -----------
    browser.get(f"{airflow.url}/connections")
    try:
        clickable("//button[contains(., 'Add Connection')]").click()
        visible("//input[@name='connection_id']").send_keys(CONN_ID)
        kind = visible("//input[@role='combobox']")
        kind.click()
        kind.send_keys("PanDA")
        clickable("//*[@role='option'][normalize-space()='PanDA']").click()
        # the relabelled standard fields: "PanDA server URL" and "OIDC id token"
        visible("//*[contains(normalize-space(), 'PanDA server URL')]")
        assert not browser.find_elements(By.XPATH, "//input[@name='login']"), "login should be hidden"
        visible("//input[@name='host']").send_keys(panda.url)
        visible("//input[@name='password']").send_keys(panda.token())
        clickable("//button[contains(., 'Extra Fields') and not(contains(., 'JSON'))]").click()
        visible("//input[@name='element_vo']").send_keys("atlas")
        visible("//input[@name='element_monitor_url']").send_keys(panda.url + "/monitor")
        refresh = visible("//input[@name='element_refresh_token']")
        assert refresh.get_attribute("type") == "password", "the refresh token must be masked"
        # auth is a select (react-select combobox) of the three modes, not free text
        assert browser.find_elements(By.XPATH, "//div[@id='element_auth']//input[@role='combobox']")
        shot(browser, "1-connection-form")
        clickable("//button[normalize-space()='Save']").click()
        wait.until(lambda _d: airflow.query("SELECT extra FROM connection WHERE conn_id=?", CONN_ID))
        shot(browser, "2-connection-saved")
    except Exception:
        shot(browser, "failure-connection-form")
        raise
    saved = json.loads(subprocess.run([sys.executable, "-m", "airflow", "connections", "get", CONN_ID, "-o", "json"],
                                      env=airflow.env, check=True, capture_output=True, text=True).stdout)[0]
    stored = saved["extra_dejson"]  # decrypted by the CLI (the database holds it encrypted)
    assert saved["conn_type"] == "panda" and saved["host"] == panda.url and stored["vo"] == "atlas", stored
    # what the form really stores: the fields left alone are there as null (the hook reads them as defaults)
    untouched = {k for k, v in stored.items() if v is None}
    assert {"timeout", "token_file", "auth"} <= untouched, stored

    # --- run the main example with that connection (none in the environment) ----------------------
    assert not any(k.startswith("AIRFLOW_CONN_") for k in airflow.env)
    WebDriverWait(browser, 180, poll_frequency=1).until(
        lambda _d: airflow.alive() or airflow.query("SELECT 1 FROM dag WHERE dag_id=?", DAG_ID))
    subprocess.run([sys.executable, "-m", "airflow", "dags", "trigger", DAG_ID, "-c", json.dumps({"tag": "browser"})],
                   env=airflow.env, check=True, capture_output=True)

    def run_ended(_driver):
        airflow.alive()
        rows = airflow.query("SELECT run_id, state FROM dag_run WHERE dag_id=?", DAG_ID)
        return next((row for row in rows if row[1] in ("success", "failed")), None)

    run_id, state = WebDriverWait(browser, 240, poll_frequency=1).until(run_ended)
    tis = airflow.query("SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=?", DAG_ID, run_id)
    assert state == "success", (tis, airflow.logs["scheduler"].read_text()[-3000:])
    tasks = [t for t in panda.sim.tasks.values() if ".browser." in t.name]
    assert len(tasks) == 1 and tasks[0].status == "done"
    jedi_task_id = tasks[0].task_id

    # --- the task's "PanDA monitor" link lands on the local server's monitor page ------------------
    try:
        browser.get(f"{airflow.url}/dags/{DAG_ID}/runs/{run_id}/tasks/submit")
        clickable("//*[(self::button or self::a or @role='tab') and normalize-space()='Details']").click()
        link = clickable("//a[contains(normalize-space(), 'PanDA monitor')]")
        shot(browser, "3-task-extra-link")
        href = link.get_attribute("href")
        assert href == f"{panda.url}/monitor/task/{jedi_task_id}/", href
        handles = set(browser.window_handles)
        link.click()
        wait.until(lambda d: len(d.window_handles) > len(handles) or d.current_url.startswith(panda.url))
        new = [h for h in browser.window_handles if h not in handles]
        if new:
            browser.switch_to.window(new[0])
        wait.until(lambda d: d.current_url.startswith(f"{panda.url}/monitor/task/{jedi_task_id}"))
        visible(f"//*[contains(normalize-space(), '{jedi_task_id}')]")
        assert f"PanDA task {jedi_task_id}" in browser.title
        shot(browser, "4-monitor-page")
    except Exception:
        shot(browser, "failure-monitor-link")
        raise
    print(f"browser test: form, run and monitor link in {time.monotonic() - started:.0f} s "
          f"(screenshots in {ARTIFACTS.relative_to(ROOT)})")
