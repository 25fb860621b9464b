"""Shared fixtures: a real local PanDA server on 127.0.0.1 and hooks connected to it."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Airflow reads its home at import: give each test process (each xdist worker) a private one, with
# its own metadata database and dags folder, before any import. Nothing is shared between workers.
# Once per process: imported a second time under another name (``tests.conftest``), this module must
# not move Airflow's home and dags folder under an Airflow that has read them already.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
if os.environ.get("PANDA_TESTS_PID") == str(os.getpid()):
    _HOME = os.environ["AIRFLOW_HOME"]
else:
    _HOME = tempfile.mkdtemp(prefix=f"airflow-panda-tests-{_WORKER}-")
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
    os.environ["PANDA_TESTS_PID"] = str(os.getpid())
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME}/airflow.db"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# dag.test() runs a trigger inline, with no executor to race (see triggers.wait.EVENT_HOLD)
os.environ["AIRFLOW__PANDA__TRIGGER_EVENT_HOLD"] = "0"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_HOME, "dags")
os.makedirs(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], exist_ok=True)  # tests may write a file there first

from airflow_provider_panda.testing.server import LocalPandaServer  # noqa: E402

STEP = 0.05
#: The PEM armour of the private key the local server mints into each proxy at run time (built from
#: parts: the tests hold no key, only look for the one a test made).
PEM_KEY_BEGIN, PEM_KEY_END = "-----BEGIN " + "PRIVATE KEY-----", "-----END " + "PRIVATE KEY-----"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: runs a real Airflow cluster (scheduler, triggerer, api-server "
                                       "as processes): the pyramid's top, minutes a test")


@pytest.fixture(scope="session")
def panda_server() -> Iterator[LocalPandaServer]:
    with LocalPandaServer(step=STEP) as server:
        yield server


@pytest.fixture(autouse=True)
def _server_left_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did to the shared local server's clock, faults or hidden tasks is undone
    after it, pass or fail, so the next test on this worker starts from a running server."""
    yield
    if "panda_server" in request.fixturenames:
        server = request.getfixturevalue("panda_server")
        server.sim.clock.freeze(False)
        server.sim.hidden.clear()
        server.sim.hold_after.clear()
        server.sim.backdate_commands = None
        server.sim.scripted.clear()
        server.panda.faults.clear()
        server.panda.fault_rate = 0.0


@pytest.fixture(scope="session")
def real_server() -> Iterator[str]:
    """The real panda-server + JEDI (integration/real_panda), started once, stopped at the end."""
    from integration.real_panda import harness

    state = harness.up()
    yield state["url"]
    if os.environ.get("REAL_PANDA_KEEP") != "1":
        harness.down()


@pytest.fixture
def conn_env(panda_server: LocalPandaServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Install an Airflow connection to the local server; returns its conn_id."""

    def install(conn_id: str = "panda_default", user: str = "user", **extra: Any) -> str:
        conn = panda_server.connection(user, retry_wait=0.01, **extra)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return install


@pytest.fixture
def hook(conn_env: Callable[..., str]):
    from airflow_provider_panda.hooks.panda import PandaHook

    return PandaHook(conn_env())


@pytest.fixture
def prod_hook(conn_env: Callable[..., str]):
    from airflow_provider_panda.hooks.panda import PandaHook

    return PandaHook(conn_env("panda_prod", user="prod"))


def task_params(tag: str = "t", **extra: Any) -> dict[str, Any]:
    """A minimal no-input analysis task with a unique name (tag becomes part of the name)."""
    params = {
        "taskName": f"user.alice.{tag}.{uuid.uuid4().hex[:10]}",
        "uniqueTaskName": True,
        "vo": "atlas",
        "prodSourceLabel": "user",
        "taskType": "anal",
        "noInput": True,
        "nEvents": 10,
        "nEventsPerJob": 5,
        "jobParameters": [{"type": "constant", "value": "echo hello"}],
        "log": {"type": "template", "param_type": "log", "value": "user.alice.log.${SN}.tgz"},
    }
    params.update(extra)
    return params


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.02) -> Any:
    """Poll until predicate() is truthy; fail loudly on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def wait_status(hook: Any, task_id: int, statuses: set[str] | tuple[str, ...], timeout: float = 60.0) -> str:
    from airflow_provider_panda.exceptions import PandaNotFoundError

    def status() -> str | None:
        try:
            current = hook.get_task_status(task_id)
        except PandaNotFoundError:
            return None
        return current if current in statuses else None

    return wait_for(status, timeout)


def params_with_outcomes(server: LocalPandaServer, outcomes: list[str], tag: str = "t", **extra: Any) -> dict:
    """Task params whose attempts end as ``outcomes`` on the local server (last one repeats)."""
    import re

    params = task_params(tag, **extra)
    server.sim.add_rule(re.escape(params["taskName"]) + "$", outcomes)
    return params
