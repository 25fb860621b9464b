"""The provider's Airflow plugin: the PanDA view (a tab on the task instance and DAG run pages) and
the fix that lets the connection list's "Test" button test a PanDA connection made in the form.

Airflow imports this module in every process that loads plugins, so it imports nothing heavy: the
view's FastAPI app is built in the api-server on its first request (:class:`LazyApp`).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from airflow_provider_panda.compat import AirflowPlugin

PREFIX = "/panda"  # app.PREFIX (not imported: that module loads FastAPI's pieces lazily, still not needed here)
TASK_HREF = PREFIX + "/view/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}?map_index={MAP_INDEX}"
RUN_HREF = PREFIX + "/view/dags/{DAG_ID}/runs/{RUN_ID}"


class LazyApp:
    """An ASGI app that builds the view's FastAPI app on its first request."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_provider_panda.ui.app import create_app

                    self._app = create_app()
        await self._app(scope, receive, send)


class ConnectionTestPort:
    """ASGI middleware for ``POST /api/v2/connections/test`` of a ``panda`` connection: drops a
    ``port`` of 0, and puts the stored secrets where the request has Airflow 3.1's mask.

    The connection list's "Test" button posts ``port: Number(stored port)``, which is 0 for a
    connection made in the form (the form hides the port and stores null). Since Airflow 3.2 the
    route refuses a test whose port differs from the stored one unless the request carries a fresh
    password (400 "The host or port to test differs from the stored connection"), so every PanDA
    connection made in the form failed its test with no message. Port 0 names no destination, so
    dropping it leaves the route's check whole: the test runs against the stored host and port.
    Airflow 3.1's list posts the token as listed, masked: the hook then tested ``***`` and reported
    the token refused."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not (scope.get("type") == "http" and scope.get("method") == "POST"
                and str(scope.get("path", "")).endswith("/api/v2/connections/test")):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the route see it
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        import asyncio

        body = await asyncio.to_thread(fixed_test_body, b"".join(chunks), stored_connection)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self.app({**scope, "headers": headers}, replay, send)


#: What Airflow's connection list shows (and its Test button posts) in place of a secret.
MASK = "***"


def fixed_test_body(body: bytes, stored: Any = None) -> bytes:
    """The test request's body for a PanDA connection: without ``"port": 0``, and with a masked
    password or extra value (``***``, what Airflow 3.1's list posts) replaced by the stored one, but
    only for the stored connection's own host, so a test can never send a stored token elsewhere.
    ``stored(conn_id)`` gives the stored connection or None. Anything else: as it came."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or data.get("conn_type") != "panda":
        return body
    changed = False
    if data.get("port") in (0, "0"):
        data.pop("port")
        changed = True
    if stored is not None and _masked(data):
        conn = stored(str(data.get("connection_id") or ""))
        if conn is not None and (conn.host or "") == (data.get("host") or "") and not data.get("port"):
            changed |= _unmask(data, conn)
    return json.dumps(data).encode() if changed else body


def _masked(data: dict[str, Any]) -> bool:
    return data.get("password") == MASK or MASK in str(data.get("extra") or "")


def _unmask(data: dict[str, Any], conn: Any) -> bool:
    """Put the stored password and extra values where the request has the mask."""
    changed = False
    if data.get("password") == MASK and conn.password:
        data["password"] = conn.password
        changed = True
    try:
        extra = json.loads(data["extra"]) if isinstance(data.get("extra"), str) else None
    except ValueError:
        extra = None
    if isinstance(extra, dict):
        kept = conn.extra_dejson
        for key, value in extra.items():
            if value == MASK and key in kept:
                extra[key] = kept[key]
                changed = True
        data["extra"] = json.dumps(extra)
    return changed


def stored_connection(conn_id: str) -> Any:
    """The connection ``conn_id`` as the api-server's secrets backends and database hold it, or None."""
    from airflow_provider_panda.compat import Connection

    if not conn_id:
        return None
    try:
        return Connection.get_connection_from_secrets(conn_id)
    except Exception:  # not stored (a new connection being tested): nothing to put back
        return None


class PandaPlugin(AirflowPlugin):
    """The PanDA tab on task instance and DAG run pages, its API, and the connection test fix."""

    name = "panda"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": PREFIX, "name": "PanDA view"}]
    fastapi_root_middlewares = [{"middleware": ConnectionTestPort, "name": "PanDA connection test port"}]
    external_views = [
        {"name": "PanDA", "href": TASK_HREF, "destination": "task_instance", "url_route": "panda"},
        {"name": "PanDA", "href": RUN_HREF, "destination": "dag_run", "url_route": "panda-run"},
    ]
