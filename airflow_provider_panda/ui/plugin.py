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
    ``port`` of 0.

    The connection list's "Test" button posts ``port: Number(stored port)``, which is 0 for a
    connection made in the form (the form hides the port and stores null). Since Airflow 3.2 the
    route refuses a test whose port differs from the stored one unless the request carries a fresh
    password (400 "The host or port to test differs from the stored connection"), so every PanDA
    connection made in the form failed its test with no message. Port 0 names no destination, so
    dropping it leaves the route's check whole: the test runs against the stored host and port."""

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
        body = fixed_test_body(b"".join(chunks))
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


def fixed_test_body(body: bytes) -> bytes:
    """The test request's body without ``"port": 0`` when it is a PanDA connection's; else as it came."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and data.get("conn_type") == "panda" and data.get("port") in (0, "0"):
        data.pop("port")
        return json.dumps(data).encode()
    return body


class PandaPlugin(AirflowPlugin):
    """The PanDA tab on task instance and DAG run pages, its API, and the connection test fix."""

    name = "panda"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": PREFIX, "name": "PanDA view"}]
    fastapi_root_middlewares = [{"middleware": ConnectionTestPort, "name": "PanDA connection test port"}]
    external_views = [
        {"name": "PanDA", "href": TASK_HREF, "destination": "task_instance", "url_route": "panda"},
        {"name": "PanDA", "href": RUN_HREF, "destination": "dag_run", "url_route": "panda-run"},
    ]
