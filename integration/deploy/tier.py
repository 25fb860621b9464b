"""Airflow as it is deployed, on this machine, with the provider: ``python -m integration.deploy up|down|status``.

Pieces, all on 127.0.0.1, each on a port of its own, each started here and stopped by PID (its
process group) at ``down``:

- a private PostgreSQL 15 cluster, Airflow's metadata database (as the real-server harness runs
  its own: the postgres user, since PostgreSQL refuses root; its data under ``.deploy/pg`` when
  that user can reach it, else in a directory of its own under the system temp directory);
- Redis (Debian's ``redis-server``, our own process: no persistence, not the system service), the
  Celery broker;
- Airflow with the CeleryExecutor: api-server, scheduler, dag-processor, two Celery workers, two
  triggerers;
- the local PanDA server (:mod:`airflow_provider_panda.testing.server`) behind a TCP proxy
  (:mod:`.proxy`) whose path a test can cut; the PanDA connection points at the proxy and is a
  secret in a secrets-backend file (``.deploy/secrets/connections.json``, mode 0600), as a site
  keeps it.

Everything lives in ``.deploy/`` (or $DEPLOY_DIR): ``state.json`` (ports, PIDs), ``log/`` (each
process's output), ``airflow/`` (AIRFLOW_HOME: airflow.cfg, task logs). Settings that tune the tier
for speed on 2 cores are in :data:`SPEED` (docs/deployment.md says which and why).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from integration.real_panda.harness import (
    PG_BIN,
    _postgres_can_use,
    alive,
    as_postgres,
    free_port,
    postmaster_pid,
)

REPO = Path(__file__).resolve().parent.parent.parent
DEPLOY_DIR = Path(os.environ.get("DEPLOY_DIR", REPO / ".deploy"))
STATE_FILE = DEPLOY_DIR / "state.json"
LOG_DIR = DEPLOY_DIR / "log"
AIRFLOW_HOME = DEPLOY_DIR / "airflow"
SECRETS_FILE = DEPLOY_DIR / "secrets" / "connections.json"
DAGS = Path(os.environ.get("DEPLOY_DAGS", REPO / "integration" / "deploy" / "dags"))
USER = "admin"
#: The Airflow processes, in start order (name, airflow sub-command).
AIRFLOW_ROLES = [
    ("scheduler", ["scheduler"]),
    ("dag-processor", ["dag-processor"]),
    # Log files are on this machine's disk, where the api-server reads them: no log server (each
    # would take the same fixed port).
    ("triggerer-1", ["triggerer", "--skip-serve-logs"]),
    ("triggerer-2", ["triggerer", "--skip-serve-logs"]),
    ("worker-1", ["celery", "worker", "--celery-hostname", "worker-1@%h", "--skip-serve-logs"]),
    ("worker-2", ["celery", "worker", "--celery-hostname", "worker-2@%h", "--skip-serve-logs"]),
    ("api-server", ["api-server"]),
]
STOP_ORDER = ["api-server", "scheduler", "worker-1", "worker-2", "triggerer-1", "triggerer-2", "dag-processor",
              "panda-proxy", "panda-server", "redis"]
#: The local PanDA server's seconds per task status step (a task runs in ~4 steps).
PANDA_STEP = float(os.environ.get("DEPLOY_PANDA_STEP", "1.0"))

#: airflow.cfg settings that make the tier fast on a small machine (section, key, value).
SPEED = [
    # Celery: each worker runs up to 16 task processes; a deferring task takes one for ~2 s.
    ("celery", "worker_concurrency", os.environ.get("DEPLOY_WORKER_CONCURRENCY", "16")),
    ("celery", "worker_prefetch_multiplier", "1"),  # a killed worker holds back no more than it runs
    # no more queued than the workers have slots: the rest waits as "scheduled" in the scheduler, not
    # in the broker, so a task is never queued for long (Airflow fails one it finds "stuck in queued"
    # and then hears failed from the executor: seen with 46 queued and the timeout at 120 s)
    ("core", "parallelism", "32"),
    ("core", "max_active_tasks_per_dag", "1024"),
    ("core", "max_map_length", "2048"),
    ("scheduler", "max_tis_per_query", "512"),
    ("scheduler", "scheduler_heartbeat_sec", "1"),
    ("scheduler", "parsing_cleanup_interval", "60"),
    # a dead worker's running tasks are found within a minute (default 5 minutes)
    ("scheduler", "task_instance_heartbeat_timeout", "45"),
    ("scheduler", "task_instance_heartbeat_timeout_detection_interval", "5"),
    ("triggerer", "job_heartbeat_sec", "2"),
    # a killed triggerer's triggers move to the other one within ~10 s (default 30)
    ("triggerer", "triggerer_health_check_threshold", "10"),
    ("dag_processor", "refresh_interval", "10"),
]


def log(message: str) -> None:
    print(f"[deploy] {message}", flush=True)


def load_state() -> dict:
    return json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}


def save_state(state: dict) -> None:
    DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    partial = STATE_FILE.with_name(f".state.{os.getpid()}.json")
    partial.write_text(json.dumps(state, indent=1))
    os.replace(partial, STATE_FILE)


# --- processes ----------------------------------------------------------------------------------


def start(state: dict, name: str, cmd: list[str], env: dict[str, str] | None = None,
          out_path: Path | None = None) -> int:
    """Start ``name`` in a session of its own (stopped as one), unless it runs; its output goes to
    ``out_path`` (default ``log/<name>.log``)."""
    pid = state.get("pids", {}).get(name)
    if alive(pid):
        return pid
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(out_path or LOG_DIR / f"{name}.log", "a") as out:
        proc = subprocess.Popen(cmd, env=env or {**os.environ, "PYTHONPATH": str(REPO)}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(DEPLOY_DIR),
                                start_new_session=True)
    state.setdefault("pids", {})[name] = proc.pid
    (DEPLOY_DIR / f"{name}.pid").write_text(f"{proc.pid}\n")
    save_state(state)
    return proc.pid


def session_pids(sid: int) -> list[int]:
    """Every live process of the session ``sid``: a process started by :func:`start` leads its own,
    and what it forks stays in it even in a process group of its own (Airflow's task processes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid and alive(int(entry.name)):
                    pids.append(int(entry.name))
    return pids


def kill_session(sid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal every process of the session ``sid`` (SIGKILL: the machine it runs on died)."""
    for pid in session_pids(sid):
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def stop_group(sid: int | None, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``sid`` (its leader and what shares its group), wait until its
    session is empty (at most ``grace`` s), then SIGKILL every process left in the session."""
    if not sid:
        return
    with contextlib.suppress(OSError):
        os.killpg(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(50):
        if not session_pids(sid):
            return
        kill_session(sid)
        time.sleep(0.1)


def stop(state: dict, name: str, grace: float = 10.0) -> None:
    stop_group(state.get("pids", {}).pop(name, None), grace)
    (DEPLOY_DIR / f"{name}.pid").unlink(missing_ok=True)
    save_state(state)


# --- PostgreSQL ---------------------------------------------------------------------------------


def pg_dir(state: dict) -> Path:
    """The cluster's directory: ``.deploy/pg`` if the postgres user can reach it (no 0700 parent),
    else one under the system temp directory, named after the checkout."""
    known = state.get("pg_dir")
    if known and Path(known).is_dir():
        return Path(known)
    inside = DEPLOY_DIR / "pg"
    inside.mkdir(parents=True, exist_ok=True)
    shutil.chown(inside, "postgres", "postgres")
    if _postgres_can_use(inside):
        folder = inside
    else:
        inside.rmdir()
        tag = hashlib.sha1(str(DEPLOY_DIR).encode()).hexdigest()[:10]
        folder = Path(tempfile.mkdtemp(prefix=f"deploy-pg-{tag}-", dir=tempfile.gettempdir()))
        shutil.chown(folder, "postgres", "postgres")
        if not _postgres_can_use(folder):
            shutil.rmtree(folder)
            raise RuntimeError("found no directory the postgres user can write to")
    state["pg_dir"] = str(folder)
    save_state(state)
    return folder


def start_postgres(state: dict) -> None:
    folder = pg_dir(state)
    data = folder / "data"
    port = state.setdefault("pg_port", free_port())
    if not (data / "PG_VERSION").exists():
        log(f"creating a private PostgreSQL 15 cluster in {folder}")
        as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                    stdout=subprocess.DEVNULL)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
max_connections = 300
timezone = 'UTC'
fsync = off
synchronous_commit = off
full_page_writes = off
""")
        # only the postgres user, over its socket, needs no password; Airflow logs in with one
        (data / "pg_hba.conf").write_text("local all postgres trust\n"
                                          "host all all 127.0.0.1/32 scram-sha-256\n")
    if not alive(postmaster_pid(data)):
        (data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed run
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start"],
                    stdout=subprocess.DEVNULL)
    state["postgres_pid"] = postmaster_pid(data)
    if not state.get("db_password"):
        state["db_password"] = secrets.token_urlsafe(18)
        sql = (f"CREATE ROLE airflow LOGIN PASSWORD '{state['db_password']}';\n"
               "CREATE DATABASE airflow OWNER airflow;\n")
        as_postgres(["psql", "-h", str(folder), "-p", str(port), "-U", "postgres", "-d", "postgres", "-q",
                     "-v", "ON_ERROR_STOP=1"], input=sql, text=True, stdout=subprocess.DEVNULL)
    save_state(state)


def stop_postgres(state: dict) -> None:
    folder = Path(state["pg_dir"]) if state.get("pg_dir") else None
    if folder is None or not folder.is_dir():
        return
    data = folder / "data"
    pid = postmaster_pid(data) or state.get("postgres_pid")
    if alive(pid):
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False,
                    stdout=subprocess.DEVNULL)
    if alive(pid):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if (folder / "server.log").exists():
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / "server.log", LOG_DIR / "postgresql.log")
    shutil.rmtree(folder, ignore_errors=True)
    for key in ("pg_dir", "postgres_pid", "pg_port", "db_password"):
        state.pop(key, None)
    save_state(state)


def database_url(state: dict) -> str:
    return f"postgresql+psycopg2://airflow:{state['db_password']}@127.0.0.1:{state['pg_port']}/airflow"


# --- Redis, the local PanDA server and its proxy ---------------------------------------------------


def install_redis() -> str:
    """Debian's redis-server (``make deploy-deps`` installs it; so does this, as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    log("installing redis-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True, stdout=subprocess.DEVNULL, env=env)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def start_redis(state: dict) -> None:
    port = state.setdefault("redis_port", free_port())
    folder = DEPLOY_DIR / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    start(state, "redis", [install_redis(), "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                           "--appendonly", "no", "--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"])
    wait_for(lambda: _connects(port), 30, "redis to listen", ["redis"], state)


def _connects(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_panda(state: dict) -> None:
    """The local PanDA server and the proxy in front of it; the connection (to the proxy) as a secret."""
    port = state.setdefault("panda_port", free_port())
    proxy_port = state.setdefault("proxy_port", free_port())
    # its first line is the connection with its token: kept with the secrets, not among the logs
    out = SECRETS_FILE.parent / "panda-server.out"
    if not alive(state.get("pids", {}).get("panda-server")):
        out.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(out.parent, 0o700)
        out.touch(mode=0o600)
        out.write_text("")
        start(state, "panda-server", [sys.executable, "-m", "airflow_provider_panda.testing.server", "--port",
                                      str(port), "--step", str(PANDA_STEP)], out_path=out)
        wait_for(lambda: out.read_text().strip(), 60, "the local PanDA server", ["panda-server"], state)
        conn = json.loads(out.read_text().splitlines()[0])
        # the connection goes through the proxy; its token and refresh token are the secret
        conn["host"] = f"http://127.0.0.1:{proxy_port}"
        conn["extra"] = {**conn["extra"], "retry_wait": 1.0}
        SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(SECRETS_FILE.parent, 0o700)
        SECRETS_FILE.touch(mode=0o600)
        SECRETS_FILE.write_text(json.dumps({"panda_default": {
            "conn_type": conn["conn_type"], "host": conn["host"], "password": conn["password"],
            "extra_dejson": conn["extra"]}}, indent=1))
    start(state, "panda-proxy", [sys.executable, "-m", "integration.deploy.proxy", "--listen", str(proxy_port),
                                 "--target", str(port)])
    wait_for(lambda: _connects(proxy_port), 30, "the proxy to listen", ["panda-proxy"], state)
    state["panda_url"] = f"http://127.0.0.1:{port}"
    save_state(state)


def connection() -> dict:
    """The PanDA connection the tier's Airflow uses (from the secrets file)."""
    return json.loads(SECRETS_FILE.read_text())["panda_default"]


def cut_panda_path(state: dict, cut: bool) -> None:
    """Cut (True) or restore (False) the network path from Airflow to the local PanDA server."""
    os.kill(state["pids"]["panda-proxy"], signal.SIGUSR1 if cut else signal.SIGUSR2)


# --- Airflow ------------------------------------------------------------------------------------


def write_airflow_cfg(state: dict) -> None:
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    os.chmod(AIRFLOW_HOME, 0o700)  # airflow.cfg holds the database password and the API's secrets
    state.setdefault("api_port", free_port())
    state.setdefault("api_secret", secrets.token_urlsafe(32))
    state.setdefault("admin_password", secrets.token_urlsafe(12))
    api = f"http://127.0.0.1:{state['api_port']}"
    settings = [
        ("core", "dags_folder", str(DAGS)),
        ("core", "executor", "CeleryExecutor"),
        ("core", "load_examples", "False"),
        ("core", "dags_are_paused_at_creation", "False"),
        ("core", "execution_api_server_url", f"{api}/execution/"),
        ("core", "simple_auth_manager_users", f"{USER}:admin"),
        ("core", "simple_auth_manager_passwords_file", str(AIRFLOW_HOME / "passwords.json")),
        ("database", "sql_alchemy_conn", database_url(state)),
        ("celery", "broker_url", f"redis://127.0.0.1:{state['redis_port']}/0"),
        ("celery", "result_backend", "db+" + database_url(state)),
        ("api", "host", "127.0.0.1"),
        ("api", "port", str(state["api_port"])),
        ("api", "base_url", api),
        ("api", "secret_key", state["api_secret"]),
        ("api_auth", "jwt_secret", state["api_secret"]),
        ("logging", "base_log_folder", str(AIRFLOW_HOME / "logs")),
        ("secrets", "backend", "airflow.secrets.local_filesystem.LocalFilesystemBackend"),
        ("secrets", "backend_kwargs", json.dumps({"connections_file_path": str(SECRETS_FILE)})),
        ("workers", "secrets_backend", "airflow.secrets.local_filesystem.LocalFilesystemBackend"),
        ("workers", "secrets_backend_kwargs", json.dumps({"connections_file_path": str(SECRETS_FILE)})),
        *SPEED,
        *[tuple(item.split(":", 2)) for item in state.get("extra_settings", [])],
    ]
    sections: dict[str, list[tuple[str, str]]] = {}
    for section, key, value in settings:
        sections.setdefault(section, []).append((key, value))
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in items) + "\n" for s, items in sections.items())
    cfg = AIRFLOW_HOME / "airflow.cfg"
    cfg.touch(mode=0o600)
    cfg.write_text(text)
    passwords = AIRFLOW_HOME / "passwords.json"
    passwords.touch(mode=0o600)
    passwords.write_text(json.dumps({USER: state["admin_password"]}))
    save_state(state)


def airflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PANDA"))}
    env.update({"AIRFLOW_HOME": str(AIRFLOW_HOME), "AIRFLOW_CONFIG": str(AIRFLOW_HOME / "airflow.cfg"),
                "PYTHONPATH": str(REPO), "TZ": "UTC"})
    return env


def airflow(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run an ``airflow`` CLI command against the tier."""
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=airflow_env(), **kwargs)


def start_airflow(state: dict) -> None:
    write_airflow_cfg(state)
    if not state.get("migrated"):
        log("migrating Airflow's metadata database")
        airflow("db", "migrate")
        state["migrated"] = True
        save_state(state)
    for name, args in AIRFLOW_ROLES:
        start(state, name, [sys.executable, "-m", "airflow", *args], airflow_env())
    wait_for(lambda: _answers(f"http://127.0.0.1:{state['api_port']}/api/v2/monitor/health"), 180,
             "the api-server", [n for n, _ in AIRFLOW_ROLES], state)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except Exception:
        return False


def wait_for(predicate, timeout: float, what: str, names: list[str], state: dict):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        dead = [n for n in names if not alive(state.get("pids", {}).get(n))]
        if dead:
            raise RuntimeError(f"{dead} exited while waiting for {what}; see {LOG_DIR}")
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}; see {LOG_DIR}")


# --- the commands -------------------------------------------------------------------------------


def up(extra_settings: list[str] | None = None) -> dict:
    """Start what is not running; ``extra_settings``: more airflow.cfg settings ("section:key:value")."""
    started = time.monotonic()
    state = load_state()
    if extra_settings is not None:
        state["extra_settings"] = extra_settings
    DEPLOY_DIR.mkdir(parents=True, exist_ok=True)
    start_postgres(state)
    start_redis(state)
    start_panda(state)
    start_airflow(state)
    state["url"] = f"http://127.0.0.1:{state['api_port']}"
    save_state(state)
    log(f"up in {time.monotonic() - started:.0f} s")
    return state


def down() -> None:
    state = load_state()
    for name in STOP_ORDER + [n for n in state.get("pids", {}) if n not in STOP_ORDER]:
        stop(state, name)
    stop_postgres(state)
    for key in ("migrated", "url"):
        state.pop(key, None)
    save_state(state)
    log("down")


def status() -> dict:
    state = load_state()
    return {"url": state.get("url"), "alive": {n: alive(p) for n, p in state.get("pids", {}).items()}
            | {"postgres": alive(state.get("postgres_pid"))}}


def login_text(state: dict) -> str:
    return (f"Airflow UI: {state['url']}  (login: {USER} / {state['admin_password']})\n"
            f"Local PanDA server: {state['panda_url']} (Airflow reaches it through the proxy on port "
            f"{state['proxy_port']}; connection panda_default in {SECRETS_FILE})\n"
            f"CLI: AIRFLOW_HOME={AIRFLOW_HOME} {sys.executable} -m airflow ...\n"
            f"Logs: {LOG_DIR}; stop with `make deploy-down`")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        try:
            state = up()
        except Exception:
            log(f"up failed; stopping what started (logs in {LOG_DIR})")
            down()
            raise
        print(login_text(state))
    elif command == "down":
        down()
    elif command == "status":
        print(json.dumps(status(), indent=1))
    else:
        print(__doc__)
        return 2
    return 0
