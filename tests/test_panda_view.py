"""The PanDA view's parts alone (pure, seconds): the cache shared by viewers and the connection test
fix. The endpoints in a real api-server (what they show, 16 concurrent viewers cost PanDA one read, a
user Airflow refuses gets 403, no secret in any answer) run in the browser tier's cluster
(tests/test_browser.py, ``make test-browser``).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import wait_for

from airflow_provider_panda.ui.cache import TaskCache
from airflow_provider_panda.ui.plugin import fixed_test_body

# --- pure ---------------------------------------------------------------------------------------


def test_concurrent_readers_of_one_task_cost_one_read_per_ttl():
    now = [0.0]
    cache = TaskCache(ttl=10.0, clock=lambda: now[0])
    gate, loads = threading.Event(), []

    def load() -> dict:
        loads.append(1)
        gate.wait(5)  # the read is slow: every other viewer arrives while it is in flight
        return {"status": "running"}

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(cache.get, ("c", 1), load) for _ in range(20)]
        wait_for(lambda: loads, 60)
        gate.set()
        answers = [f.result() for f in futures]
    assert len(loads) == 1 and all(a["task"] == {"status": "running"} for a in answers)
    now[0] = 9.9
    cache.get(("c", 1), load)
    assert len(loads) == 1  # still fresh
    now[0] = 10.0
    assert cache.get(("c", 1), lambda: {"status": "done"})["history"][-1][0] == "done"
    assert cache.get(("c", 2), load) and len(loads) == 2  # another task: its own read


def test_a_failed_read_is_shared_too_and_says_why():
    cache = TaskCache(ttl=10.0, clock=lambda: 0.0)
    calls = []

    def boom() -> dict:
        calls.append(1)
        raise RuntimeError("PanDA is down")

    first, second = cache.get("k", boom), cache.get("k", boom)
    assert len(calls) == 1 and first["error"] == second["error"] == "RuntimeError: PanDA is down"


def test_the_test_buttons_port_0_is_dropped_only_for_panda_connections():
    panda = {"connection_id": "p", "conn_type": "panda", "host": "https://x", "port": 0, "password": "***"}
    assert "port" not in json.loads(fixed_test_body(json.dumps(panda).encode()))
    for other in ({**panda, "conn_type": "http"}, {**panda, "port": 25443}):
        body = json.dumps(other).encode()
        assert fixed_test_body(body) == body
    assert fixed_test_body(b"not json") == b"not json"


def test_the_test_buttons_masked_secrets_are_the_stored_ones_for_the_stored_host_only():
    """Airflow 3.1's list posts the token masked: the stored one is tested, never sent to another host."""
    from types import SimpleNamespace

    stored = SimpleNamespace(host="https://x", password="the-token",
                             extra_dejson={"vo": "atlas", "refresh_token": "the-refresh"})
    lookup = {"p": stored}.get
    panda = {"connection_id": "p", "conn_type": "panda", "host": "https://x", "password": "***",
             "extra": json.dumps({"vo": "atlas", "refresh_token": "***"})}
    sent = json.loads(fixed_test_body(json.dumps(panda).encode(), lookup))
    assert sent["password"] == "the-token"
    assert json.loads(sent["extra"]) == {"vo": "atlas", "refresh_token": "the-refresh"}
    for elsewhere in ({**panda, "host": "https://attacker"}, {**panda, "port": 8443},
                      {**panda, "connection_id": "new"}, {**panda, "conn_type": "http"}):
        body = json.dumps(elsewhere).encode()
        assert b"the-token" not in fixed_test_body(body, lookup)
    fresh = {**panda, "password": "typed-now", "extra": "{}"}
    assert json.loads(fixed_test_body(json.dumps(fresh).encode(), lookup))["password"] == "typed-now"

