"""The PanDA view's FastAPI app, mounted by the api-server under :data:`PREFIX` (plugin.py).

Routes (HTML for the UI's iframe, JSON for scripts), each answering only a user whom Airflow's auth
manager lets read the DAG's task instances and XComs (403 otherwise, 401 without a login):

- ``/view/dags/{dag_id}/runs/{run_id}/tasks/{task_id}?map_index=N``: one task instance's PanDA
  task(s) (all map indexes when ``map_index`` is not a number);
- ``/view/dags/{dag_id}/runs/{run_id}``: a summary of every PanDA task of the run, mapped ones included;
- the same under ``/api/`` as JSON.

PanDA is read on the server side with the task's own connection (store.py) through
:class:`~airflow_provider_panda.ui.cache.TaskCache`; no credential, connection field or raw PanDA
answer reaches the browser.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote

from airflow_provider_panda import api
from airflow_provider_panda.ui.cache import TaskCache

PREFIX = "/panda"
#: The page reloads itself this often (seconds) while a task it shows is not over.
REFRESH = 10
#: Seconds one PanDA request of the view may take (the view reads again after the TTL).
VIEW_TIMEOUT = 15.0

CACHE = TaskCache()


def server_hook(conn_id: str) -> Any:
    """A hook for ``conn_id`` as the api-server holds it (its secrets backends and database), with a
    short timeout."""
    from dataclasses import replace

    from airflow_provider_panda.compat import Connection
    from airflow_provider_panda.config import config_from_connection
    from airflow_provider_panda.hooks.panda import PandaHook

    hook = PandaHook(conn_id)
    config = config_from_connection(Connection.get_connection_from_secrets(conn_id))
    hook.__dict__["config"] = replace(config, timeout=min(config.timeout, VIEW_TIMEOUT))
    return hook


def task_view(row: dict[str, Any], cache: TaskCache = CACHE, hook_for: Any = server_hook) -> dict[str, Any]:
    """One task instance's PanDA task: the row from Airflow's database and the cached PanDA read."""
    from airflow_provider_panda.calls import check_id
    from airflow_provider_panda.ui.summary import read_task

    try:
        task_id = check_id(row["jedi_task_id"])
    except Exception:
        return {**row, "panda": {"task": None, "error": "the XCom jedi_task_id is not a task id", "age": 0,
                                 "history": []}}
    conn_id = row["conn_id"]
    panda = cache.get((conn_id, task_id), lambda: read_task(hook_for(conn_id), task_id))
    return {**{k: v for k, v in row.items() if k != "conn_id"}, "jedi_task_id": task_id, "panda": panda}


def _rows(dag_id: str, run_id: str, task_id: str | None, map_index: int | None) -> dict[str, Any]:
    from fastapi import HTTPException

    from airflow_provider_panda.ui.store import run_rows

    found = run_rows(dag_id, run_id, task_id, map_index)
    if found is None:
        raise HTTPException(404, f"DAG run {run_id!r} of {dag_id!r} not found")
    return {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
            "run_state": found["run_state"], "tasks": [task_view(r) for r in found["rows"]]}


def _map_index(value: str | None) -> int | None:
    """The UI fills ``{MAP_INDEX}`` only on a mapped instance's page: anything else means all of them."""
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None


def create_app() -> Any:
    """The FastAPI app (built on the first request: plugin.py's :class:`LazyApp`)."""
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse

    from airflow_provider_panda.compat import DagAccessEntity, requires_access_dag

    allowed = [Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)),
               Depends(requires_access_dag("GET", DagAccessEntity.XCOM))]
    app = FastAPI(title="PanDA view", dependencies=allowed, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}")
    def task_json(dag_id: str, run_id: str, task_id: str, map_index: str | None = None) -> dict[str, Any]:
        return _rows(dag_id, run_id, task_id, _map_index(map_index))

    @app.get("/api/dags/{dag_id}/runs/{run_id}")
    def run_json(dag_id: str, run_id: str) -> dict[str, Any]:
        return _rows(dag_id, run_id, None, None)

    @app.get("/view/dags/{dag_id}/runs/{run_id}/tasks/{task_id}", response_class=HTMLResponse)
    def task_page(dag_id: str, run_id: str, task_id: str, map_index: str | None = None) -> HTMLResponse:
        return HTMLResponse(render_task_page(_rows(dag_id, run_id, task_id, _map_index(map_index))))

    @app.get("/view/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse)
    def run_page(dag_id: str, run_id: str) -> HTMLResponse:
        return HTMLResponse(render_run_page(_rows(dag_id, run_id, None, None)))

    return app


# --- HTML -------------------------------------------------------------------------------------

_e = html.escape

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;color:#1a202c;margin:12px 16px}
h2{font-size:17px;margin:4px 0 6px} h3{font-size:14px;margin:14px 0 4px;color:#4a5568}
.card{border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;margin-bottom:14px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;background:#edf2f7}
.s-done,.s-finished-job,.s-success{background:#c6f6d5;color:#22543d}.s-running,.s-scouting,.s-ready{background:#bee3f8;color:#2a4365}
.s-failed,.s-broken,.s-aborted,.s-exhausted{background:#fed7d7;color:#742a2a}.s-finished{background:#fefcbf;color:#744210}
.bar{display:flex;height:14px;border-radius:7px;overflow:hidden;background:#edf2f7;width:100%;max-width:520px}
.bar .ok{background:#38a169}.bar .bad{background:#e53e3e}
table{border-collapse:collapse;margin:2px 0} td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#4a5568;font-size:12px} .muted{color:#718096;font-size:12px} code{font-size:12px}
a{color:#2b6cb0}
"""


def _badge(status: Any) -> str:
    text = str(status or "unknown")
    return f'<span class="badge s-{_e(text)}">{_e(text)}</span>'


def _bar(progress: dict[str, Any]) -> str:
    files = progress.get("files") or 0
    ok = 100 * (progress.get("finished") or 0) / files if files else 0
    bad = 100 * (progress.get("failed") or 0) / files if files else 0
    return (f'<div class="bar" role="progressbar" aria-valuenow="{round(ok)}" aria-valuemin="0" aria-valuemax="100">'
            f'<div class="ok" style="width:{ok:.1f}%"></div><div class="bad" style="width:{bad:.1f}%"></div></div>'
            f'<div class="progress-text">{progress.get("finished") or 0} of {files} input files finished, '
            f'{progress.get("failed") or 0} failed ({progress.get("pct_finished") or 0}%)</div>')


def _label(view: dict[str, Any]) -> str:
    if view.get("map_index", -1) is not None and view.get("map_index", -1) >= 0:
        name = view.get("name")
        return f"{_e(view['task_id'])} [{_e(str(name)) if name else view['map_index']}]"
    return _e(view["task_id"])


def _monitor(view: dict[str, Any]) -> str:
    url = view.get("monitor_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">PanDA monitor</a>'
    return ""


def _attempts(attempts: list[Any]) -> str:
    if not attempts:
        return ""
    rows = []
    for a in attempts:
        if not isinstance(a, dict):
            continue
        then = a.get("action") or ""
        params = a.get("retried_with") or {}
        sent = ", ".join(f"{_e(str(k))}={_e(str(v))}" for k, v in params.items()) if isinstance(params, dict) else ""
        rows.append(f"<tr><td>{_e(str(a.get('attempt', '?')))}</td><td>{_badge(a.get('status'))}</td>"
                    f"<td>{_e(str(a.get('reason') or ''))}"
                    + (f"<br><span class='muted'>decision: {_e(str(a.get('decision')))}</span>" if a.get("decision")
                       else "")
                    + f"</td><td>{_e(str(then))}</td><td><code>{sent}</code></td></tr>")
    return ("<h3>Attempts</h3><table class='attempts'><tr><th>#</th><th>ended</th><th>reason</th><th>then</th>"
            "<th>retried with</th></tr>" + "".join(rows) + "</table>")


def _outputs(view: dict[str, Any], task: dict[str, Any]) -> str:
    outputs = [o for o in view.get("outputs") or [] if isinstance(o, dict)]
    if outputs:
        rows = "".join(f"<tr><td>{_e(str(o.get('type', '')))}</td><td><code>{_e(str(o.get('name', '')))}</code></td>"
                       f"<td>{_e(str(o.get('n_files', '')))} files, "
                       f"{_e(str(o.get('n_files_failed', 0)))} failed</td></tr>" for o in outputs)
        return f"<h3>Output datasets</h3><table class='outputs'>{rows}</table>"
    names = task.get("outputs") or []
    if names:
        return "<h3>Output datasets</h3><table class='outputs'>" + "".join(
            f"<tr><td><code>{_e(n)}</code></td></tr>" for n in names) + "</table>"
    return ""


def render_task_card(view: dict[str, Any]) -> str:
    panda = view["panda"]
    task = panda.get("task") or {}
    head = (f"<h2>{_label(view)} &rarr; PanDA task {view['jedi_task_id']} {_badge(task.get('status'))}</h2>"
            f"<div class='muted'>{_e(str(task.get('taskName') or ''))}</div>"
            f"<div class='muted'>Airflow: {_e(str(view.get('state') or 'unknown'))}"
            + (f", PanDA attempt {task['attemptNr']}" if task.get("attemptNr") else "")
            + f" &middot; read {panda.get('age', 0):.0f} s ago &middot; {_monitor(view)}</div>")
    parts = [head]
    if panda.get("error"):
        parts.append(f"<p class='error'>PanDA could not be read: {_e(panda['error'])}</p>")
    if task:
        parts.append("<h3>Progress</h3>" + _bar(task.get("progress") or {}))
        if task.get("errorDialog"):
            parts.append(f"<p class='dialog'>PanDA says: {_e(str(task['errorDialog'])[:600])}</p>")
        jobs = task.get("jobs") or []
        if jobs:
            parts.append("<h3>Jobs by status <span class='muted'>(input files per job status)</span></h3>"
                         "<table class='jobs'><tr>" + "".join(f"<th>{_e(s)}</th>" for s, _ in jobs) + "</tr><tr>"
                         + "".join(f"<td>{n}</td>" for _, n in jobs) + "</tr></table>")
        errors = task.get("errors")
        if errors:
            parts.append("<h3>Commonest errors</h3><table class='errors'><tr><th>jobs</th><th>error</th>"
                         "<th>sites</th></tr>" + "".join(
                             f"<tr><td>{e['count']}</td><td>{_e(e['error'])}</td><td>"
                             + ", ".join(f"{_e(s)} &times;{n}" for s, n in e["sites"]) + "</td></tr>"
                             for e in errors) + "</table>")
        elif errors is None:
            parts.append("<p class='muted'>Job errors are not read for tasks of this size: see the monitor.</p>")
        history = panda.get("history") or []
        if history:
            parts.append("<h3>Status history <span class='muted'>(as this view saw it)</span></h3>"
                         + " &rarr; ".join(f"{_badge(s)} <span class='muted'>{_e(t)}</span>" for s, t in history))
    parts.append(_attempts(view.get("attempts") or []))
    parts.append(_outputs(view, task))
    return "<div class='card panda-task'>" + "".join(parts) + "</div>"


def _still_running(data: dict[str, Any]) -> bool:
    if data.get("run_state") in ("queued", "running"):
        return True
    return any(((v["panda"].get("task") or {}).get("status") or "") not in api.TASK_FINAL for v in data["tasks"])


def _page(title: str, body: str, refresh: bool) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH}">' if refresh else ""
    return (f'<!doctype html><html><head><meta charset="utf-8">{meta}<title>{_e(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")


def render_task_page(data: dict[str, Any]) -> str:
    if not data["tasks"]:
        body = (f"<p>No PanDA task for <b>{_e(data['task_id'] or '')}</b> in this run (yet): the view shows the "
                "PanDA task a PanDA operator, sensor or @task.panda task pushed (XCom jedi_task_id).</p>")
    else:
        body = "".join(render_task_card(v) for v in data["tasks"])
    return _page(f"PanDA: {data['task_id']}", body, _still_running(data))


def render_run_page(data: dict[str, Any]) -> str:
    if not data["tasks"]:
        return _page("PanDA", "<p>No PanDA task in this DAG run (yet).</p>", data.get("run_state") in
                     ("queued", "running"))
    rows = []
    for v in data["tasks"]:
        task = v["panda"].get("task") or {}
        top = (task.get("errors") or [{}])[0]
        link = (f"{PREFIX}/view/dags/{quote(data['dag_id'], safe='')}/runs/{quote(data['run_id'], safe='')}/tasks/"
                f"{quote(v['task_id'], safe='')}?map_index={v['map_index']}")
        rows.append(
            f"<tr><td><a href='{_e(link)}'>{_label(v)}</a></td><td>{v['jedi_task_id']}</td>"
            f"<td>{_badge(task.get('status'))}</td><td style='min-width:220px'>{_bar(task.get('progress') or {})}</td>"
            f"<td>{', '.join(f'{_e(s)} {n}' for s, n in task.get('jobs') or [])}</td>"
            f"<td>{_e(top.get('error', ''))}{' &times;' + str(top['count']) if top.get('count') else ''}</td>"
            f"<td>{_monitor(v)}</td></tr>")
    done = sum(1 for v in data["tasks"] if ((v["panda"].get("task") or {}).get("status")) in api.TASK_FINAL)
    body = (f"<h2>PanDA tasks of this run <span class='muted'>{done} of {len(data['tasks'])} ended</span></h2>"
            "<table class='summary'><tr><th>Airflow task</th><th>PanDA task</th><th>status</th><th>progress</th>"
            "<th>jobs</th><th>commonest error</th><th></th></tr>" + "".join(rows) + "</table>")
    return _page("PanDA tasks", body, _still_running(data))
