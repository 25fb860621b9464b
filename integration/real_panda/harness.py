"""Start the real PanDA server (panda-server 1.0.4 from PyPI) with JEDI and its daemons on 127.0.0.1.

    python -m integration.real_panda.harness up      # install what is missing, start, wait until ready
    python -m integration.real_panda.harness down    # stop everything it started (by PID)
    python -m integration.real_panda.harness status
    python -m integration.real_panda.harness backdate TASK_ID STATUS   # as JEDI's updateTaskModTimeJEDI

Pieces: a private PostgreSQL 15 cluster loaded with PanDA's own schema (``../shared/panda-database``,
else a clone of PanDAWMS/panda-database), panda-server in its own virtualenv under gunicorn behind
a small WSGI wrapper standing in for Apache's identity handling, JEDI, and the server daemons.
Idempotent: a second ``up`` reuses what is installed and running. Everything lives in
``.real_panda/`` (or $REAL_PANDA_DIR) except the PostgreSQL cluster (data, sockets, its log), which
runs as the postgres user and so lives where that user can reach whatever the checkout's parents
are: a directory under the system temp directory, one per checkout, removed by ``down`` (its log is
kept as ``.real_panda/log/postgresql.log``). Facts and fixes: ../shared/real-panda-server.md.
Needs root (apt packages, the postgres user); about a minute from nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATE_DIR = Path(os.environ.get("REAL_PANDA_DIR", REPO / ".real_panda"))
VENV = STATE_DIR / "venv"
PANDA_HOME = STATE_DIR / "home"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
STATE_FILE = STATE_DIR / "state.json"
DB_PASSWORD = "panda-local"
PANDA_SERVER = "panda-server==1.0.4"
SCHEMA_DIRS = [REPO.parent / "shared" / "panda-database" / "sqls"]
SCHEMA_REPO = "https://github.com/PanDAWMS/panda-database"
COMPONENTS = ("PANDA", "PANDAMETA", "PANDAARCH", "PANDABIGMON", "DEFT")
KINDS = ("TABLE", "VIEW", "TYPE", "SEQUENCE", "FUNCTION", "TRIGGER", "SCHEDULER_JOBS", "PROCEDURE")
SITE = "TEST_SITE"
#: Users JEDI must know (name as the server derives it from the token, see wsgi_wrapper.py).
USERS = [("Alice Analyst", "alice"), ("Bob Other", "bob"), ("Paula Production", "paula")]
QUEUE = {"type": "unified", "status": "online", "cloud": "WORLD", "nickname": SITE, "catchall": "allow_no_pilot",
         "corecount": 1, "capability": "ucore", "maxwdir": 100000, "space": 100000, "ddm": "LOCAL_DISK",
         "jobseed": "std", "is_cvmfs": True, "vo_name": "wlcg", "pilot_manager": "local", "resource_type": "SCORE",
         "maxtime": 0, "mintime": 0, "maxrss": 0, "minrss": 0, "memory": 0}
TASK_STATUSES_SEED = ("registered", "defined", "ready", "scouting", "running", "paused", "throttled", "pending",
                      "assigning", "scouted", "prepared", "finishing", "toretry", "toincexec", "rerefine",
                      "aborting", "tobroken", "exhausted", "done", "finished", "failed", "aborted", "broken",
                      "staging", "submitting")


def log(message: str) -> None:
    print(f"[real-panda] {message}", flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    return subprocess.run(cmd, **kwargs)


def as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run as the postgres user, from a directory it can enter (the checkout's may be out of its reach)."""
    kwargs.setdefault("cwd", "/")
    return run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd], **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_state() -> dict:
    return json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}


def save_state(state: dict) -> None:
    """Replace the state file in one step: test workers read it while another process writes."""
    partial = STATE_FILE.with_name(f".state.{os.getpid()}.json")
    partial.write_text(json.dumps(state, indent=1))
    os.replace(partial, STATE_FILE)


@contextlib.contextmanager
def exclusive() -> Iterator[None]:
    """One ``up`` or ``down`` at a time per state directory (pytest workers each call ``up``)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def alive(pid: int | None) -> bool:
    """Whether the process runs (a zombie, exited but not reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- install ------------------------------------------------------------------------------------


def install_system_packages() -> None:
    if (Path("/usr/share/postgresql/15/extension/pg_cron.control").exists()
            and Path("/usr/share/postgresql/15/extension/pg_partman.control").exists()):
        return
    log("installing postgresql-15-cron and postgresql-15-partman")
    run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
    run(["apt-get", "install", "-y", "-qq", "postgresql-15-cron", "postgresql-15-partman"],
        stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def site_packages() -> Path:
    return next((VENV / "lib").glob("python3*/site-packages"))


def install_panda_server() -> None:
    if (VENV / ".installed").exists():
        return
    log(f"installing {PANDA_SERVER} in {VENV}")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    run([sys.executable, "-m", "venv", str(VENV)])
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    # Its build hook looks up the user atlpan when run as root: build with a non-root group.
    run(["setpriv", "--regid=65534", "--clear-groups", *pip, "--no-deps", PANDA_SERVER],
        env={**os.environ, "HOME": str(STATE_DIR)})
    # Its dependencies, less mod_wsgi (needs Apache's apxs), plus a database driver and gunicorn.
    deps = ["panda-common>=0.1.9", "panda-client-light>=1.5.55", "pyOpenSSL", "python-daemon", "stomp.py", "pyyaml",
            "pyjwt", "polars", "requests", "psutil>=5.4.8", "idds-common", "idds-client", "idds-workflow>=1.1.0",
            "idds-doma", "idds-atlas", "ruamel.yaml", "cwl-utils>=0.13", "packaging", "snakemake>=9.14.5", "numpy",
            "scipy", "werkzeug", "bs4", "psycopg2-binary", "gunicorn"]
    run([*pip, *deps])
    (VENV / ".installed").touch()


def patch_installed_server() -> None:
    """Five edits of the installed code. Fix 5: PostgreSQL 15 needs an alias on the subquery of
    get_task_failure_metrics (used by retry). Speed only: JEDI's PostProcessor hard-codes a 60 s
    cycle and ignores its loopCycle setting, which made every task end up to a minute late; the
    Adder (add_main) takes a job report over from a stalled worker after 10 minutes, now 1 (3 of
    176 reports stalled after "new start" in our runs, cause not found; their jobs stayed
    ``holding`` and their tasks never ended within a test's wait).
    Fix 7 (not in shared/real-panda-server.md): JEDI's self-deadlock on its one DB proxy (below).
    Lost-file recovery: ``RecoverLostFilesCore`` asks Rucio which output files still exist; here it
    asks the stand-in (``rucio_standin.py``: no dataset is known, so every finished output is lost)."""
    path = site_packages() / "pandaserver" / "taskbuffer" / "db_proxy_mods" / "metrics_module.py"
    text = path.read_text()
    start = text.index("def get_task_failure_metrics")
    if 'f") t_sub"' not in text[start:]:
        closing = text.index('f")"\n', text.index('f"FROM ("', start))
        path.write_text(text[:closing] + 'f") t_sub"' + text[closing + len('f")"'):])
    path = site_packages() / "pandajedi" / "jediorder" / "PostProcessor.py"
    text = path.read_text()
    path.write_text(text.replace("loop_cycle = 60\n", "loop_cycle = int(jedi_config.postprocessor.loopCycle)\n"))
    path = site_packages() / "pandaserver" / "daemons" / "scripts" / "add_main.py"
    path.write_text(path.read_text().replace("    lock_interval = 10\n", "    lock_interval = 1\n"))
    path = site_packages() / "pandajedi" / "jedicore" / "JediTaskBuffer.py"
    text = path.read_text().replace(SITE_MAPPER_INSIDE, SITE_MAPPER_BEFORE)
    if text.count(SITE_MAPPER_BEFORE) != 2:
        raise RuntimeError(f"{path}: the SiteMapper deadlock fix no longer applies; see SITE_MAPPER_INSIDE")
    path.write_text(text)
    path = site_packages() / "pandaserver" / "dataservice" / "RecoverLostFilesCore.py"
    text = path.read_text()
    if RUCIO_STANDIN not in text:
        path.write_text(text + RUCIO_STANDIN)


#: Appended to RecoverLostFilesCore.py: its main() looks get_files_from_rucio up at call time.
RUCIO_STANDIN = ("\n# real-panda harness: no Rucio here (integration/real_panda/rucio_standin.py)\n"
                 "from integration.real_panda.rucio_standin import get_files_from_rucio  # noqa: E402,F811\n")


#: Fix 7, a deadlock: each JediTaskBuffer process has one DB proxy (nDBConnection=1), and two of its
#: methods build the SiteMapper (on first use, then every 10 minutes) while holding it; the SiteMapper
#: reads resource types through the same pool and waits for that proxy. JEDI's PostProcessor then
#: stalls on its first cycle or ten minutes later: its call gives up after 600 s, and the new child it
#: starts deadlocks again (tasks do not end, kills do not run, for 10-30 minutes). Build it first.
SITE_MAPPER_INSIDE = ("        with self.proxyPool.get() as proxy:\n"
                      "            tmp_site_mapper = self.get_site_mapper()\n")
SITE_MAPPER_BEFORE = ("        tmp_site_mapper = self.get_site_mapper()\n"
                      "        with self.proxyPool.get() as proxy:\n")


# --- database -----------------------------------------------------------------------------------


def schema_dir() -> Path:
    for folder in SCHEMA_DIRS:
        if (folder / "init_step.sql").exists():
            return folder
    clone = STATE_DIR / "panda-database"
    if not clone.exists():
        log(f"cloning {SCHEMA_REPO}")
        run(["git", "clone", "--depth", "1", SCHEMA_REPO, str(clone)])
    return clone / "schema" / "postgres" / "sqls"


def psql(port: int, db: str, *args: str, user: str = "postgres", **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}
    return run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db, "-v", "ON_ERROR_STOP=1", "-q",
                *args], stdout=subprocess.DEVNULL, env=env, **kwargs)


def _postgres_can_use(folder: Path) -> bool:
    return as_postgres(["test", "-w", str(folder), "-a", "-x", str(folder)], check=False).returncode == 0


def pg_dir(state: dict) -> Path:
    """The cluster's directory (data, sockets, log), outside the checkout: PostgreSQL runs as the
    postgres user, who cannot reach into a checkout below a 0700 directory (a home, ``mktemp -d``).
    One per checkout under the system temp directory (named after the checkout), removed by ``down``."""
    known = state.get("pg_dir")
    if known and Path(known).is_dir():
        return Path(known)
    tag = hashlib.sha1(str(STATE_DIR).encode()).hexdigest()[:10]
    for base in dict.fromkeys([tempfile.gettempdir(), "/tmp", "/var/tmp"]):  # the first postgres can use
        folder = Path(tempfile.mkdtemp(prefix=f"real-panda-pg-{tag}-", dir=base))
        shutil.chown(folder, "postgres", "postgres")
        if _postgres_can_use(folder):
            state.update({"pg_dir": str(folder), "schema_loaded": False})
            save_state(state)
            return folder
        shutil.rmtree(folder)
    raise RuntimeError("found no temp directory the postgres user can write to")


def postmaster_pid(data: Path) -> int | None:
    """The running postmaster's PID from its postmaster.pid (first line), if any."""
    try:
        return int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def start_postgres(state: dict) -> int:
    port = state.get("pg_port") or free_port()
    folder = pg_dir(state)
    data = folder / "data"
    if not (data / "PG_VERSION").exists():
        log(f"creating a private PostgreSQL cluster in {folder}")
        as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                    stdout=subprocess.DEVNULL)
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"""
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
max_connections = 200
timezone = 'UTC'
shared_preload_libraries = 'pg_cron, pg_partman_bgw'
cron.database_name = 'postgres'
cron.host = '127.0.0.1'
pg_partman_bgw.dbname = 'panda_db'
pg_partman_bgw.interval = 3600
fsync = off
synchronous_commit = off
""")
    if not alive(postmaster_pid(data)):
        (data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed run
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "start"],
                    stdout=subprocess.DEVNULL)
    state.update({"pg_port": port, "postgres_pid": postmaster_pid(data)})
    save_state(state)
    if not state.get("schema_loaded"):
        load_schema(port)
        state["schema_loaded"] = True
        save_state(state)
    return port


def stop_postgres(state: dict) -> None:
    """Stop the cluster (pg_ctl, then its postmaster PID if it lingers), keep its log, remove its directory."""
    folder = Path(state["pg_dir"]) if state.get("pg_dir") else None
    if folder is None or not folder.is_dir():
        state.pop("pg_dir", None)
        return
    data = folder / "data"
    pid = postmaster_pid(data) or state.get("postgres_pid")
    if alive(pid):
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], check=False,
                    stdout=subprocess.DEVNULL)
        kill_pids([pid], "postgres")
    if (folder / "server.log").exists():
        shutil.copyfile(folder / "server.log", STATE_DIR / "log" / "postgresql.log")
    shutil.rmtree(folder, ignore_errors=True)
    for key in ("pg_dir", "postgres_pid", "schema_loaded"):
        state.pop(key, None)
    save_state(state)


def load_schema(port: int) -> None:
    sqls = schema_dir()
    log(f"loading PanDA's schema from {sqls}")
    work = STATE_DIR / "sql"
    work.mkdir(exist_ok=True)
    init = (sqls / "init_step.sql").read_text().replace("${PANDA_DB_PASSWORD}", DB_PASSWORD)
    (work / "init_step.sql").write_text(init)
    psql(port, "postgres", "-f", str(work / "init_step.sql"))
    version = (sqls.parent / "version").read_text().strip() if (sqls.parent / "version").exists() else "0.1.6"
    for component in COMPONENTS:
        for kind in KINDS:
            path = sqls / f"pg_{component}_{kind}.sql"
            if not path.exists():
                continue
            psql(port, "panda_db", "-f", str(path))
            if (component, kind) == ("PANDA", "TABLE"):
                # Fix 1: the scheduler jobs need worker_node_queue, which only a patch creates.
                patch = (sqls / "patches" / "0.0.31.patch.sql").read_text()
                table = re.search(r"CREATE TABLE IF NOT EXISTS doma_panda\.worker_node_queue.*?\);\s*ALTER TABLE"
                                  r" doma_panda\.worker_node_queue OWNER TO panda;", patch, re.S)
                (work / "wnq.sql").write_text(table.group(0))
                psql(port, "panda_db", "-f", str(work / "wnq.sql"))
    # Fix 2: Debian's pg_partman 4.7 knows 'native', not 'range'.
    (work / "partition.sql").write_text((sqls / "pg_PARTITION.sql").read_text().replace("'range'", "'native'"))
    psql(port, "panda_db", "-f", str(work / "partition.sql"))
    major, minor, patch_nr = (int(x) for x in version.split(".")[:3])
    psql(port, "panda_db", "-c", "INSERT INTO doma_panda.pandadb_version (component, major, minor, patch) "
         f"VALUES ('PanDA', {major}, {minor}, {patch_nr}) ON CONFLICT DO NOTHING")
    psql(port, "panda_db", "-f", str(sqls / "post_step_panda.sql"))
    psql(port, "postgres", "-f", str(sqls / "post_step_cron.sql"))
    # Fix 3: pg_cron jobs are stored with an empty nodename.
    psql(port, "postgres", "-c", "UPDATE cron.job SET nodename='127.0.0.1'")
    seed(port)


def seed(port: int) -> None:
    """Fixes 4 and 6: JEDI's min-task-id table, the test users, and one queue."""
    rows = ",".join(f"('{s}', 0)" for s in TASK_STATUSES_SEED)
    psql(port, "panda_db", "-c", f"INSERT INTO doma_panda.jedi_aux_status_mintaskid (status, min_jeditaskid) "
         f"VALUES {rows} ON CONFLICT DO NOTHING")
    for index, (name, nick) in enumerate(USERS, start=1):
        psql(port, "panda_db", "-c", f"INSERT INTO doma_pandameta.users (id, name, dn, status) VALUES "
             f"({index}, '{name}', '{name}/CN=nickname:{nick}', 'ok') ON CONFLICT DO NOTHING")
    queue = json.dumps(QUEUE).replace("'", "''")
    psql(port, "panda_db", "-c", "INSERT INTO doma_panda.schedconfig_json (panda_queue, data, last_update) "
         f"VALUES ('{SITE}', '{queue}', now()) ON CONFLICT DO NOTHING")


# --- configuration ------------------------------------------------------------------------------


def set_keys(text: str, section: str, values: dict[str, str]) -> str:
    """Replace (or add) ``key = value`` lines inside one [section] of an ini-like template."""
    lines = text.splitlines()
    out, current, seen, replacing = [], None, set(), False
    for line in lines:
        if replacing and line[:1] in (" ", "\t") and line.strip():
            continue  # a continuation line of a multi-line value we replaced
        replacing = False
        header = re.match(r"^\[(\w+)\]", line)
        if header:
            if current == section:
                out.extend(f"{k} = {v}" for k, v in values.items() if k not in seen)
            current = header.group(1)
        key = re.match(r"^\s*([\w.]+)\s*=", line)
        if current == section and key and key.group(1) in values and not line.lstrip().startswith("#"):
            out.append(f"{key.group(1)} = {values[key.group(1)]}")
            seen.add(key.group(1))
            replacing = True
            continue
        out.append(line)
    if current == section:
        out.extend(f"{k} = {v}" for k, v in values.items() if k not in seen)
    elif section not in {m for m in re.findall(r"^\[(\w+)\]", text, re.M)}:
        out.append(f"[{section}]")
        out.extend(f"{k} = {v}" for k, v in values.items())
    return "\n".join(out) + "\n"


def configure(state: dict) -> None:
    etc = PANDA_HOME / "etc" / "panda"
    etc.mkdir(parents=True, exist_ok=True)
    logs = STATE_DIR / "log"
    (logs / "pandacache" / "jedilog").mkdir(parents=True, exist_ok=True)
    templates = VENV / "etc" / "panda"
    port, pg = state["server_port"], state["pg_port"]
    purelib = site_packages()
    db = {"dbhost": "127.0.0.1", "dbport": str(pg), "dbuser": "panda", "dbpasswd": DB_PASSWORD, "dbname": "panda_db",
          "backend": "postgres"}
    common = (templates / "panda_common.cfg.rpmnew").read_text()
    common = set_keys(common, "logger", {"logdir": str(logs)})
    (etc / "panda_common.cfg").write_text(common)
    server = (templates / "panda_server.cfg.rpmnew").read_text()
    server = server.replace("@@virtual_env@@", str(VENV)).replace("@@install_purelib@@", str(purelib))
    server = set_keys(server, "server", {
        **db, "logdir": str(logs), "cache_dir": str(logs / "pandacache"), "nDBConnection": "2",
        "schemaPANDA": "DOMA_PANDA", "schemaMETA": "DOMA_PANDAMETA", "schemaPANDAARCH": "DOMA_PANDAARCH",
        "schemaJEDI": "DOMA_PANDA", "schemaDEFT": "DOMA_DEFT", "pserverhost": "127.0.0.1",
        "pserverport": str(port), "pserverhosthttp": "127.0.0.1", "pserverporthttp": str(port),
        "pserveralias": "127.0.0.1", "token_authType": "None", "useJEDI": "True", "disableHTTP": "False",
        "home_dir_cwd": str(STATE_DIR), "keyDir": str(STATE_DIR),
        "adder_plugins": "any:pandaserver.dataservice.adder_dummy_plugin:AdderDummyPlugin",
        "setupper_plugins": "any:pandaserver.dataservice.setupper_dummy_plugin:SetupperDummyPlugin",
    })
    server = set_keys(server, "daemon", {"enable": "True", "uname": "", "gname": "", "n_proc": "2",
                                         "config": _daemon_config()})
    (etc / "panda_server.cfg").write_text(server)
    jedi = (templates / "panda_jedi.cfg.rpmnew").read_text()
    jedi = jedi.replace("@@panda_user@@", "").replace("@@panda_group@@", "")
    jedi = set_keys(jedi, "master", {"uname": "", "gname": ""})
    jedi = set_keys(jedi, "db", {**db, "nWorkers": "5"})  # fewer DB proxies can starve JEDI's agents
    jedi = set_keys(jedi, "ddm", {"modConfig": "wlcg:1:integration.real_panda.ddm_client:LocalDDMClient"})
    for section in ("confeeder", "taskrefine", "jobgen", "postprocessor", "tcommando"):
        jedi = set_keys(jedi, section, {"nWorkers": "1", "loopCycle": "5"})
    jedi = set_keys(jedi, "jobgen", {"procConfig": "wlcg:any:1:"})
    jedi = set_keys(jedi, "confeeder", {"checkInterval": "1"})
    jedi = set_keys(jedi, "watchdog", {"loopCycle": "60"})
    (etc / "panda_jedi.cfg").write_text(jedi)


def _daemon_config() -> str:
    # recover_lost_files_daemon (not in the template's list) carries out file recovery requests: it
    # picks up the request files the server writes (cache_dir/recov.*) once they are 5 s old.
    config = {"add_main": {"enable": True, "period": 5, "loop": True}, "add_sub": {"enable": True, "period": 5},
              "recover_lost_files": {"module": "recover_lost_files_daemon", "enable": True, "period": 5}}
    return json.dumps(config)


#: Every process the harness starts carries this variable (value: the state directory and the
#: process's name), and so do all it forks: ``down`` finds JEDI's and the daemons' workers, which
#: leave their parent's process group, by it and ends them by PID.
MARK = "REAL_PANDA_HARNESS"


def environment(state: dict, name: str = "") -> dict[str, str]:
    url = f"http://127.0.0.1:{state['server_port']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PANDA", "AIRFLOW"))}
    env.update({
        "PANDA_HOME": str(PANDA_HOME), "PANDA_URL": f"{url}/server/panda", "PANDA_URL_SSL": f"{url}/server/panda",
        "PANDACACHE_URL": f"{url}/server/panda", "PANDA_API_URL": f"{url}/api/v1", "PANDA_API_URL_SSL": f"{url}/api/v1",
        "PANDA_BEHIND_REAL_LB": "1", "PANDA_NO_ROOT": "1", "TZ": "UTC",
        "PYTHONPATH": os.pathsep.join([str(site_packages() / "pandacommon"), str(REPO)]),
        MARK: f"{STATE_DIR}:{name}",
        # Their temp files (multiprocessing's pymp-* of killed workers) stay in the state directory.
        "TMPDIR": str(STATE_DIR / "tmp"),
    })
    if name == "jedi":  # JEDI imports server modules top-level ("import taskbuffer.DBProxyPool")
        env["PYTHONPATH"] += os.pathsep + str(site_packages() / "pandaserver")
    return env


# --- processes ----------------------------------------------------------------------------------


def marked_pids(name: str = "") -> list[int]:
    """PIDs of the processes started for this state directory (``name``: only that one's)."""
    wanted = f"{MARK}={STATE_DIR}:{name}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v == wanted or (not name and v.startswith(wanted)) for v in variables):
            pids.append(int(entry.name))
    return pids


def kill_pids(pids: list[int | None], what: str, grace: float = 15.0) -> None:
    """SIGTERM, wait until they are gone (at most ``grace`` s), then SIGKILL and wait again."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for p in pids if alive(p)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    if left:
        raise RuntimeError(f"{what}: processes {left} survived SIGKILL")


def _count(path: Path, text: str) -> int:
    return path.read_text(errors="replace").count(text) if path.exists() else 0


def _pid_in(pid_file: Path) -> int | None:
    """The PID a daemon wrote to ``pid_file``, or None while the file is missing or still empty."""
    try:
        words = pid_file.read_text().split()
    except FileNotFoundError:
        return None
    return int(words[0]) if words and words[0].isdigit() else None


def start_process(state: dict, name: str, cmd: list[str], pid_file: Path | None = None,
                  ready_line: str | None = None, timeout: float = 60.0) -> None:
    """Start ``name`` unless it runs; with ``pid_file`` it daemonises and that file names the real
    process; with ``ready_line`` wait until its output shows that line once more than before."""
    if alive(state.get(f"{name}_pid")):
        return
    if pid_file is not None:  # leftovers of a killed run block a new start
        pid_file.unlink(missing_ok=True)
        pid_file.with_name(pid_file.name + ".lock").unlink(missing_ok=True)
    out_path = STATE_DIR / "log" / f"{name}.out"
    seen = _count(out_path, ready_line) if ready_line else 0
    out = open(out_path, "a")
    proc = subprocess.Popen(cmd, env=environment(state, name), stdout=out, stderr=subprocess.STDOUT,
                            cwd=str(STATE_DIR), start_new_session=True)
    out.close()
    deadline = time.monotonic() + timeout
    if pid_file is not None:  # a daemonising process: its PID file names the real one
        proc.wait(timeout=timeout)
        pid = _pid_in(pid_file)
        while pid is None and time.monotonic() < deadline:  # the file is created before the PID is written
            time.sleep(0.2)
            pid = _pid_in(pid_file)
        state[f"{name}_pid"] = pid
    else:
        state[f"{name}_pid"] = proc.pid
    save_state(state)
    while ready_line and _count(out_path, ready_line) <= seen and alive(state[f"{name}_pid"]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    if not alive(state[f"{name}_pid"]):
        raise RuntimeError(f"{name} exited at start; see {out_path}")
    if ready_line and _count(out_path, ready_line) <= seen:
        raise RuntimeError(f"{name} did not log {ready_line!r} within {timeout:.0f} s; see {out_path}")


def start_jedi(state: dict, attempts: int = 8) -> None:
    """Start JEDI and wait until its PostProcessor completes a cycle (its agents work). Starts used to
    hang there (8 of 12) until fix 7; a restart stays as the last resort for a hang of another cause."""
    jedi_pid = STATE_DIR / "jedi.pid"
    command = [str(VENV / "bin" / "python"), str(site_packages() / "pandajedi" / "jediorder" / "JediMaster.py"),
               "--pid", str(jedi_pid)]
    post_log = STATE_DIR / "log" / "panda-PostProcessor.log"
    for attempt in range(1, attempts + 1):
        seen = _count(post_log, "> done")
        start_process(state, "jedi", command, pid_file=jedi_pid)
        deadline = time.monotonic() + 40  # a good start finishes its first cycle within seconds
        while time.monotonic() < deadline and alive(state.get("jedi_pid")):
            if _count(post_log, "> done") > seen:
                return
            time.sleep(0.5)
        log(f"JEDI's PostProcessor did not complete a cycle (start {attempt}); restarting JEDI")
        stop_process(state, "jedi")
    raise RuntimeError(f"JEDI did not come up; see {STATE_DIR / 'log'}")


def stop_process(state: dict, name: str) -> None:
    """End the process and every process it forked (found by their mark), by PID."""
    kill_pids([state.get(f"{name}_pid"), *marked_pids(name)], name)
    state.pop(f"{name}_pid", None)
    (STATE_DIR / f"{name}.pid").unlink(missing_ok=True)
    (STATE_DIR / f"{name}.pid.lock").unlink(missing_ok=True)
    save_state(state)


def base_url(state: dict) -> str:
    return f"http://127.0.0.1:{state['server_port']}"


def wait_ready(state: dict, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(base_url(state) + "/api/v1/system/is_alive",
                                             headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=5) as r:
                if json.loads(r.read()).get("success"):
                    return
        except Exception:
            pass
        if not alive(state.get("server_pid")):
            raise RuntimeError(f"panda-server exited; see {STATE_DIR / 'log' / 'server.out'}")
        time.sleep(0.5)
    raise RuntimeError("panda-server did not answer is_alive in time")


def up() -> dict:
    """Install what is missing and start what is not running; wait until all of it works."""
    with exclusive():
        return _up()


def _up() -> dict:
    started = time.monotonic()
    install_system_packages()
    install_panda_server()
    patch_installed_server()  # idempotent
    state = load_state()
    (STATE_DIR / "log").mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "tmp").mkdir(exist_ok=True)
    start_postgres(state)
    state.setdefault("server_port", free_port())
    configure(state)
    python = str(VENV / "bin" / "python")
    start_process(state, "server", [str(VENV / "bin" / "gunicorn"), "-w", "1", "--threads", "4",
                                    "--no-control-socket", "-b", f"127.0.0.1:{state['server_port']}",
                                    "--timeout", "120", "integration.real_panda.wsgi_wrapper:application"])
    wait_ready(state)
    start_jedi(state)
    daemon_pid = STATE_DIR / "daemons.pid"
    start_process(state, "daemons", [python, "-m", "pandaserver.daemons.master", "-P", str(daemon_pid)],
                  pid_file=daemon_pid, ready_line="daemon master launched all worker processes")
    state["url"] = base_url(state)
    save_state(state)
    log(f"up at {state['url']} in {time.monotonic() - started:.0f} s")
    return state


def down() -> None:
    """Stop everything ``up`` started, by PID, and remove the cluster's temp directory."""
    with exclusive():
        _down()


def _down() -> None:
    state = load_state()
    for name in ("daemons", "jedi", "server"):
        stop_process(state, name)
    kill_pids(marked_pids(), "left-over harness processes")
    shutil.rmtree(STATE_DIR / "tmp", ignore_errors=True)
    stop_postgres(state)
    save_state(state)
    log("down")


#: What a task's status may be set to (PanDA's statuses: lowercase words).
STATUS_RE = re.compile(r"[a-z]{2,20}")


def backdate_status(task_id: int, status: str) -> None:
    """Write a task's status as JEDI's ``updateTaskModTimeJEDI`` does (panda-server 1.0.4,
    taskbuffer/db_proxy_mods/misc_standalone_module.py): the status and ``modificationTime =
    CURRENT_DATE-1`` in one UPDATE of the JEDI tasks table, so ``get_tasks_modified_since``
    misses the change while ``get_status`` shows it."""
    if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id <= 0:
        raise ValueError(f"task_id must be a positive integer, got {task_id!r}")
    if not isinstance(status, str) or not STATUS_RE.fullmatch(status):
        raise ValueError(f"status must be a lowercase word, got {status!r}")
    state = load_state()
    if not state.get("pg_port") or not alive(state.get("postgres_pid")):
        raise RuntimeError("the harness's database is not running (harness up)")
    # The statement of updateTaskModTimeJEDI, with the schema it is configured with (schemaJEDI).
    sql = ("UPDATE DOMA_PANDA.JEDI_Tasks SET modificationTime=CURRENT_DATE-1,status=:'status',oldStatus=NULL "
           "WHERE jediTaskID=:task_id RETURNING jediTaskID;\n")
    answer = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(state["pg_port"]), "-U", "panda", "-d", "panda_db", "-X", "-q", "-t",
         "-A", "-v", "ON_ERROR_STOP=1", "-v", f"status={status}", "-v", f"task_id={task_id}"],
        input=sql, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": DB_PASSWORD})
    if answer.returncode != 0:
        raise RuntimeError(f"backdate_status failed: {answer.stderr.strip()}")
    if answer.stdout.split() != [str(task_id)]:
        raise LookupError(f"JEDI has no task {task_id}")


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        print(json.dumps({"url": up()["url"]}))
    elif command == "down":
        down()
    elif command == "backdate" and len(argv) == 4 and argv[2].isdigit():
        backdate_status(int(argv[2]), argv[3])
    elif command == "status":
        state = load_state()
        print(json.dumps({k: v for k, v in state.items() if k.endswith(("_pid", "url", "port", "_dir"))}
                         | {"alive": {n: alive(state.get(f"{n}_pid")) for n in ("server", "jedi", "daemons")}}))
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
