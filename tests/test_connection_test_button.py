"""The connection list's "Test" button, as it posts, against a real api-server (on the newest and,
in ``make test-oldest``, the oldest Airflow): a PanDA connection stored without a port, with its
token shown masked (``***``), is tested with the stored token and answers with the hook's message;
the same request naming another host never carries the stored token there.

Airflow 3.1 posts the masked token and its route tests what it gets; 3.2+ posts ``port: 0`` and
refuses a port that differs from the stored one. The plugin's middleware (``ui/plugin.py``) mends
both; the browser tier clicks the button on the newest release."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    home: Path = tmp_path_factory.mktemp("api-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"})
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    log = home / "api-server.log"
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                token = requests.get(f"{base}/auth/token", timeout=10).json()["access_token"]
                break
            except (requests.RequestException, ValueError, KeyError):
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        yield base, {"Authorization": f"Bearer {token}"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class _Recorder(BaseHTTPRequestHandler):
    """Another server on 127.0.0.1: records the Authorization headers it is sent."""

    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.headers.get("Authorization") or "")
        self.send_response(404)
        self.end_headers()

    do_POST = do_GET  # noqa: N815

    def log_message(self, *args) -> None:
        pass


def test_the_list_test_button_tests_the_stored_token_on_its_own_host_only(api_server, panda_server):
    base, headers = api_server
    token = panda_server.token("user")
    conn = {"connection_id": "panda_form", "conn_type": "panda", "host": panda_server.url, "password": token,
            "extra": json.dumps({"vo": "atlas"})}
    made = requests.post(f"{base}/api/v2/connections", json=conn, headers=headers, timeout=60)
    assert made.status_code == 201, made.text
    listed = requests.get(f"{base}/api/v2/connections/panda_form", headers=headers, timeout=60).json()
    assert listed["password"] != token  # the list shows it masked
    # what the list's button posts: the row as listed, the port as a number (null -> 0)
    body = {key: listed.get(key) for key in ("connection_id", "conn_type", "host", "login", "schema", "password",
                                             "extra", "description")}
    body["port"] = listed.get("port") or 0
    answer = requests.post(f"{base}/api/v2/connections/test", json=body, headers=headers, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": True, "message": f"Connected to {panda_server.url} with VO 'atlas': "
                                                        "the credentials were accepted."}

    recorder = HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        elsewhere = dict(body, host=f"http://127.0.0.1:{recorder.server_port}")
        answer = requests.post(f"{base}/api/v2/connections/test", json=elsewhere, headers=headers, timeout=120)
        assert answer.status_code in (200, 400), answer.text
        assert answer.status_code == 400 or answer.json()["status"] is False
        assert not [h for h in _Recorder.seen if token in h]  # the stored token never went there
    finally:
        recorder.shutdown()
