"""The local server's protocol quirks, seen with a bare HTTP client, and its command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests

from airflow_provider_panda.testing import messages


@pytest.fixture
def http(panda_server):
    session = requests.Session()

    def call(method: str, name: str, token_user: str | None = "user", origin: str = "atlas", accept: bool = True,
             **kwargs):
        headers = {"Accept": "application/json"} if accept else {}
        if token_user:
            headers.update({"Authorization": f"Bearer {panda_server.token(token_user)}", "Origin": origin})
        return session.request(method, f"{panda_server.url}/api/v1/{name}", headers=headers, **kwargs)

    return call


def test_envelope_and_plain_text_content_type(http):
    answer = http("GET", "system/is_alive", token_user=None)
    assert answer.status_code == 200 and answer.json() == {"success": True, "message": "", "data": None}
    assert answer.headers["content-type"].startswith("text/plain")  # as the real server says


def test_without_accept_json_the_answer_is_a_python_repr(http):
    answer = http("GET", "system/is_alive", token_user=None, accept=False)
    assert answer.text == "{'success': True, 'message': '', 'data': None}"


def test_unknown_method_is_403_plain_text(http):
    answer = http("GET", "task/no_such_call")
    assert answer.status_code == 403 and answer.text == "ERROR : method no_such_call is forbidden"


def test_wrong_http_method(http):
    assert http("POST", "task/get_status", json={"task_id": 1}).json() == messages.envelope(
        False, "expecting GET, received POST")


def test_unknown_argument_and_bad_cast(http):
    assert http("GET", "task/get_status", params={"task_id": 1, "bogus": 2}).json()["message"].startswith(
        "Argument error:")
    message = http("GET", "task/get_job_ids", params={"task_id": "abc"}).json()["message"]
    assert message.startswith("Type error: 'task_id' with value 'abc' could not be casted to type int")


def test_no_token_is_not_secure(http):
    assert http("GET", "task/get_status", token_user=None, params={"task_id": 1}).json() == messages.envelope(
        False, messages.MESSAGE_SSL)


@pytest.mark.parametrize("origin,text", [
    ("cms", "Unknown vo : cms"),
    ("atlas:production", "Not a member of the atlas/production group"),
])
def test_token_refusals_are_403_before_the_handler(http, origin, text):
    answer = http("GET", "task/get_status", origin=origin, params={"task_id": 1})
    assert answer.status_code == 403 and answer.text == f"ERROR : {messages.MESSAGE_TOKEN_FAILED} {text}"


def test_expired_token(panda_server):
    token = panda_server.token("user", lifetime=-10)
    answer = requests.get(f"{panda_server.url}/api/v1/task/get_status", params={"task_id": 1},
                          headers={"Authorization": f"Bearer {token}", "Origin": "atlas"})
    assert answer.status_code == 403 and "Signature has expired" in answer.text


def test_datetimes_are_marked(http, hook):
    from conftest import task_params, wait_status

    task_id = hook.submit_task(task_params("dt"))
    wait_status(hook, task_id, {"done"})
    data = http("GET", "task/get_tasks_modified_since", params={"since": "2000-01-01 00:00:00"}).json()["data"]
    info = next(v for v in data.values() if v["jediTaskID"] == task_id)
    assert set(info["modificationTime"]) == {"__datetime__"}


def test_latest_is_an_alias_of_v1(panda_server):
    assert requests.get(f"{panda_server.url}/api/latest/system/is_alive",
                        headers={"Accept": "application/json"}).json()["success"] is True


def test_command_line_prints_a_usable_connection():
    proc = subprocess.Popen([sys.executable, "-m", "airflow_provider_panda.testing.server", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        conn = json.loads(proc.stdout.readline())
        assert conn["conn_type"] == "panda" and conn["host"].startswith("http://127.0.0.1:")
        headers = {"Accept": "application/json", "Authorization": f"Bearer {conn['password']}",
                   "Origin": conn["extra"]["vo"]}
        answer = requests.get(conn["host"] + "/api/v1/task/get_status", params={"task_id": 1}, headers=headers)
        assert answer.json() == messages.envelope(False, messages.MESSAGE_TASK_NOT_FOUND)
        # and a refresh token of the server's IdP, so a session longer than the id token's hour goes on
        renewed = requests.post(conn["host"] + "/oidc/token", data={
            "grant_type": "refresh_token", "refresh_token": conn["extra"]["refresh_token"], "client_id": "panda-x"})
        assert renewed.status_code == 200 and renewed.json()["id_token"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
