"""What a test or a benchmark reads and does on a running tier: its metadata database, the local PanDA
server's control endpoints (request counts, simulated JEDI), and Airflow's CLI through :mod:`.tier`."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

#: The User-Agent of the provider's async client: the requests the triggerers sent.
ASYNC_CLIENT = "airflow-provider-panda (httpx)"


def wait_until(predicate: Any, timeout: float, what: str, diagnose: Any = None) -> Any:
    """``predicate()``'s first truthy answer, polled; the timeout only limits a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{diagnose()}" if diagnose else ""))


class TierClient:
    """One connection to the tier's PostgreSQL and the PanDA server's ``/_control`` endpoints."""

    def __init__(self, deploy: Any, state: dict[str, Any]) -> None:
        import psycopg2

        self.deploy, self.state = deploy, state
        self.db = psycopg2.connect(host="127.0.0.1", port=state["pg_port"], user="airflow",
                                   password=state["db_password"], dbname="airflow")
        self.db.autocommit = True

    def sql(self, text: str, *args: Any) -> list[tuple]:
        with self.db.cursor() as cur:
            cur.execute(text, args)
            return cur.fetchall()

    def control(self, action: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.state['panda_url']}/_control/{action}", data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    def triggerer_requests(self) -> int:
        """Requests the triggerers (the async client) sent to PanDA so far."""
        return self.control("requests")["by_client"].get(ASYNC_CLIENT, 0)
