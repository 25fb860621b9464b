"""A catalogue of bad inputs across the public API: each gets a clear, typed error, before any request
where the input is ours; nothing hangs and nothing ends in an internal traceback."""

from __future__ import annotations

import json
import os

import pytest

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import (
    PandaConnectionConfigError,
    PandaInputError,
    PandaResponseError,
)
from airflow_provider_panda.hooks.panda import PandaHook

_STATE = {"tmp": "/tmp"}
SECRET = "eyJsecret-token-value-0xC0FFEE"


def big_file() -> str:
    path = os.path.join(_STATE["tmp"], "user.too-big.tgz")
    with open(path, "wb") as handle:
        handle.truncate(api.SANDBOX_NO_BUILD_LIMIT + 1)
    return path


# (case id, call on a hook, expected error, words the message must contain)
HOOK_CASES = [
    ("id zero", lambda h: h.get_task_status(0), PandaInputError, "positive integer"),
    ("id negative", lambda h: h.get_task_status(-5), PandaInputError, "positive integer"),
    ("id string", lambda h: h.get_task_status("123"), PandaInputError, "str"),
    ("id None", lambda h: h.get_task_status(None), PandaInputError, "NoneType"),
    ("id huge", lambda h: h.get_task_status(2**64), PandaInputError, "2**63"),
    ("id float", lambda h: h.kill_task(1.5), PandaInputError, "float"),
    ("id bool", lambda h: h.finish_task(True), PandaInputError, "bool"),
    ("id list", lambda h: h.get_job_ids([1]), PandaInputError, "list"),
    ("job ids empty", lambda h: h.get_job_status([]), PandaInputError, "empty"),
    ("job ids string", lambda h: h.get_job_status("1,2"), PandaInputError, "list"),
    ("job ids zero", lambda h: h.kill_jobs([0]), PandaInputError, "positive integer"),
    ("job ids mixed", lambda h: h.get_full_job_status([1, "2"]), PandaInputError, "str"),
    ("job ids: a bad one past the first call's worth", lambda h: h.get_job_status([*range(1, 6000), 0]),
     PandaInputError, "positive integer"),
    ("job ids None", lambda h: h.get_job_status(None), PandaInputError, "list"),
    ("job ids dict", lambda h: h.kill_jobs({1: 2}), PandaInputError, "list"),
    ("params None", lambda h: h.submit_task(None), PandaInputError, "must be a dict"),
    ("params list", lambda h: h.submit_task([]), PandaInputError, "must be a dict"),
    ("params string", lambda h: h.submit_task('{"taskName": "x"}'), PandaInputError, "must be a dict"),
    ("params no taskName", lambda h: h.submit_task({}), PandaInputError, "taskName"),
    ("params empty taskName", lambda h: h.submit_task({"taskName": " "}), PandaInputError, "taskName"),
    ("params taskName int", lambda h: h.submit_task({"taskName": 5}), PandaInputError, "taskName"),
    ("params not JSON", lambda h: h.submit_task({"taskName": "x", "f": object()}), PandaInputError, "JSON"),
    ("params NaN", lambda h: h.submit_task({"taskName": "x", "n": float("nan")}), PandaInputError, "JSON"),
    ("params uniqueTaskName str", lambda h: h.submit_task({"taskName": "x", "uniqueTaskName": "yes"}),
     PandaInputError, "uniqueTaskName"),
    ("params huge", lambda h: h.submit_task({"taskName": "x", "blob": "x" * (17 * api.MB)}), PandaInputError,
     "bytes"),
    ("parent zero", lambda h: h.submit_task({"taskName": "x"}, parent_task_id=0), PandaInputError, "parent_task_id"),
    ("parent string", lambda h: h.submit_task({"taskName": "x"}, parent_task_id="7"), PandaInputError,
     "parent_task_id"),
    ("retry params string", lambda h: h.retry_task(1, new_params="ramCount=4000"), PandaInputError, "dict"),
    ("retry params not JSON", lambda h: h.retry_task(1, new_params={"a": object()}), PandaInputError, "JSON"),
    ("finish soft string", lambda h: h.finish_task(1, soft="no"), PandaInputError, "soft"),
    ("recovery dry_run string", lambda h: h.send_file_recovery_request(1, dry_run="yes"), PandaInputError,
     "dry_run"),
    ("command empty", lambda h: h.send_command_to_job(1, ""), PandaInputError, "non-empty"),
    ("command too long", lambda h: h.send_command_to_job(1, "x" * 251), PandaInputError, "250"),
    ("command None", lambda h: h.send_command_to_job(1, None), PandaInputError, "non-empty"),
    ("command job zero", lambda h: h.send_command_to_job(0, "tobekilled"), PandaInputError, "job_id"),
    ("file missing", lambda h: h.put_file("/nonexistent/sources.tgz"), PandaInputError, "does not exist"),
    ("file is a directory", lambda h: h.put_file("/tmp"), PandaInputError, "not a file"),
    ("file over the limit", lambda h: h.put_file(big_file()), PandaInputError, "at most"),
    ("file path None", lambda h: h.put_file(None), PandaInputError, "file path"),
    ("file path int", lambda h: h.put_file(123), PandaInputError, "file path"),
    ("since words", lambda h: h.get_tasks_modified_since("yesterday"), PandaInputError, "YYYY"),
    ("since number", lambda h: h.get_tasks_modified_since(1700000000), PandaInputError, "datetime"),
    ("since None", lambda h: h.get_tasks_modified_since(None), PandaInputError, "datetime"),
]


@pytest.mark.parametrize("case,call,error,words", HOOK_CASES, ids=[c[0] for c in HOOK_CASES])
def test_bad_hook_input_fails_before_any_request(hook, panda_server, tmp_path, case, call, error, words):
    _STATE["tmp"] = str(tmp_path)
    before = sum(panda_server.panda.requests.values())
    with pytest.raises(error) as info:
        call(hook)
    assert words in str(info.value) and "Traceback" not in str(info.value)
    assert sum(panda_server.panda.requests.values()) == before, "a request was sent"


CONNECTION_CASES = [
    ("no host", {"conn_type": "panda"}, "no host"),
    ("bad scheme", {"conn_type": "panda", "host": "ftp://panda.example"}, "http(s) URL"),
    ("no hostname", {"conn_type": "panda", "host": "https://"}, "http(s) URL"),
    ("bad port", {"conn_type": "panda", "host": "https://panda.example:99999999"}, "port"),
    ("unknown auth", {"conn_type": "panda", "host": "https://p.example", "password": SECRET,
                      "extra": {"vo": "atlas", "auth": "kerberos"}}, "auth"),
    ("oidc without token", {"conn_type": "panda", "host": "https://p.example", "extra": {"auth": "oidc", "vo": "a"}},
     "no token"),
    ("oidc without vo", {"conn_type": "panda", "host": "https://p.example", "password": SECRET}, "vo"),
    ("x509 without proxy", {"conn_type": "panda", "host": "https://p.example", "extra": {"auth": "x509"}},
     "x509_proxy"),
    ("token over http to a remote host", {"conn_type": "panda", "host": "http://panda.example", "password": SECRET,
                                          "extra": {"vo": "atlas"}}, "plain http"),
    ("cache over http with a token", {"conn_type": "panda", "host": "https://p.example", "password": SECRET,
                                      "extra": {"vo": "atlas", "cache_url": "http://cache.example"}}, "plain http"),
    ("timeout not a number", {"conn_type": "panda", "host": "https://p.example", "extra": {"timeout": "abc"}},
     "timeout"),
    ("timeout negative", {"conn_type": "panda", "host": "https://p.example", "extra": {"timeout": -1}}, "timeout"),
    ("retries too many", {"conn_type": "panda", "host": "https://p.example", "extra": {"max_retries": 100}},
     "max_retries"),
    ("verify not a boolean", {"conn_type": "panda", "host": "https://p.example", "extra": {"verify": "maybe"}},
     "verify"),
    ("bad cache URL", {"conn_type": "panda", "host": "https://p.example", "extra": {"cache_url": "cache"}},
     "cache_url"),
    ("bad monitor URL", {"conn_type": "panda", "host": "https://p.example", "extra": {"monitor_url": "bigpanda"}},
     "monitor_url"),
]


@pytest.mark.parametrize("case,conn,words", CONNECTION_CASES, ids=[c[0] for c in CONNECTION_CASES])
def test_bad_connection_is_refused_before_any_request(monkeypatch, case, conn, words):
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_BAD", json.dumps(conn))
    with pytest.raises(PandaConnectionConfigError) as info:
        PandaHook("panda_bad").get_task_status(1)
    assert words in str(info.value)
    assert SECRET not in str(info.value)


def test_unreadable_token_file_and_proxy(monkeypatch, tmp_path, panda_server):
    missing = str(tmp_path / "no-such-token")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_TF", json.dumps(
        {"conn_type": "panda", "host": panda_server.url, "extra": {"vo": "atlas", "token_file": missing}}))
    with pytest.raises(PandaConnectionConfigError, match="cannot read token_file"):
        PandaHook("panda_tf").get_task_status(1)
    empty = tmp_path / "empty-token"
    empty.write_text("  \n")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_TF", json.dumps(
        {"conn_type": "panda", "host": panda_server.url, "extra": {"vo": "atlas", "token_file": str(empty)}}))
    with pytest.raises(PandaConnectionConfigError, match="holds no token"):
        PandaHook("panda_tf").get_task_status(1)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_PX", json.dumps(
        {"conn_type": "panda", "host": panda_server.url, "extra": {"x509_proxy": str(tmp_path / "x509up_u0")}}))
    with pytest.raises(PandaConnectionConfigError, match="not a readable file"):
        PandaHook("panda_px").get_task_status(1)


WAIT_CASES = [
    ("unknown success status", dict(success_statuses=("donee",)), "unknown PanDA task status"),
    ("empty success statuses", dict(success_statuses=()), "must not be empty"),
    ("poll interval zero", dict(poll_interval=0), "poll_interval"),
    ("poll interval NaN", dict(poll_interval=float("nan")), "poll_interval"),
    ("poll interval string", dict(poll_interval="60"), "poll_interval"),
    ("poll interval over a day", dict(poll_interval=10**6), "poll_interval"),
    ("negative timeout", dict(timeout=-5), "timeout"),
    ("unknown on_timeout", dict(on_timeout="explode"), "on_timeout"),
    ("auto retries string", dict(auto_retries="2"), "auto_retries"),
    ("auto retries negative", dict(auto_retries=-1), "auto_retries"),
    ("task params a number", dict(task_params=42), "task_params"),
]


@pytest.mark.parametrize("case,kwargs,words", WAIT_CASES, ids=[c[0] for c in WAIT_CASES])
def test_bad_operator_arguments_fail_at_parse_time(case, kwargs, words):
    from airflow_provider_panda.operators import SubmitTaskOperator

    with pytest.raises(PandaInputError, match=words.replace("(", r"\(")):
        SubmitTaskOperator(task_id="t", **{"task_params": {"taskName": "x"}, **kwargs})


def test_bad_sensor_statuses():
    from airflow_provider_panda.sensors import TaskStatusSensor

    with pytest.raises(PandaInputError, match="both success and failure"):
        TaskStatusSensor(task_id="t", jedi_task_id=1, target_statuses=["done"], failure_statuses=["done"])
    with pytest.raises(PandaInputError, match="unknown PanDA task status"):
        TaskStatusSensor(task_id="t", jedi_task_id=1, failure_statuses=["oops"])


@pytest.mark.parametrize("fault,words", [("body:not json at all", "not JSON"),
                                         ("body:[1, 2]", "not the PanDA envelope"),
                                         ("body:{\"ok\": true}", "not the PanDA envelope")])
def test_server_answers_that_are_not_the_envelope(hook, conn_env, panda_server, fault, words):
    conn_env(max_retries=0)  # retried otherwise (tests/test_transport.py)
    panda_server.panda.faults.append(fault)
    with pytest.raises(PandaResponseError, match=words):
        hook.get_task_status(1)


def test_the_catalogue_is_large_enough():
    count = len(HOOK_CASES) + len(CONNECTION_CASES) + len(WAIT_CASES) + 3 + 3 + 2
    print(f"bad-input catalogue: {count} cases")
    assert count >= 40
