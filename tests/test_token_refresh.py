"""OIDC refresh end to end against the local server's auth config, discovery and token endpoints."""

from __future__ import annotations

import json

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes

from airflow_provider_panda.exceptions import PandaAuthError
from airflow_provider_panda.hooks.panda import PandaHook


@pytest.fixture
def short_tokens(panda_server):
    """Tokens that live 3 s (so every read refreshes): a wait of several lifetimes must still work."""
    lifetime = panda_server.issuer.lifetime
    panda_server.issuer.lifetime = 3.0
    yield panda_server
    panda_server.issuer.lifetime = lifetime


def test_expiring_token_is_refreshed_before_the_call(panda_server, monkeypatch):
    conn = panda_server.connection()
    conn["password"] = panda_server.token("user", lifetime=60)  # within the refresh margin
    conn["extra"]["refresh_token"] = panda_server.refresh_token("user")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_R", json.dumps(conn))
    before = panda_server.panda.requests["oidc/token"]
    hook = PandaHook("panda_r")
    assert hook.get_job_ids(1) == [] and hook.get_job_ids(2) == []
    assert panda_server.panda.requests["oidc/token"] == before + 1  # refreshed once, then reused


def test_expired_token_without_refresh_token_is_refused(panda_server, monkeypatch):
    conn = panda_server.connection()
    conn["password"] = panda_server.token("user", lifetime=-5)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_X", json.dumps({**conn, "extra": {**conn["extra"], "max_retries": 0}}))
    with pytest.raises(PandaAuthError, match="Signature has expired"):
        PandaHook("panda_x").get_job_ids(1)


def test_a_refused_refresh_is_a_clear_error_without_secrets(panda_server, monkeypatch):
    conn = panda_server.connection()
    conn["password"] = expired = panda_server.token("user", lifetime=-5)
    conn["extra"]["refresh_token"] = "not-a-refresh-token-of-this-idp"
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_Y", json.dumps(conn))
    with pytest.raises(PandaAuthError, match="refreshing it failed") as info:
        PandaHook("panda_y").get_job_ids(1)
    assert expired not in str(info.value) and "not-a-refresh-token" not in str(info.value)


def test_token_file_with_the_idp_response_is_refreshed(panda_server, monkeypatch, tmp_path):
    token_file = tmp_path / "token.json"
    token_file.write_text(json.dumps({"id_token": panda_server.token("user", lifetime=10),
                                      "refresh_token": panda_server.refresh_token("user")}))
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_F", json.dumps(
        {"conn_type": "panda", "host": panda_server.url, "extra": {"vo": "atlas", "token_file": str(token_file)}}))
    assert PandaHook("panda_f").get_user_name_from_token()[0] == "Alice Analyst"
    assert PandaHook("panda_f").get_job_ids(1) == []


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_wait_longer_than_a_token_lifetime_succeeds(short_tokens, monkeypatch, deferrable):
    server = short_tokens
    conn = server.connection(retry_wait=0.01)
    conn["extra"]["refresh_token"] = server.refresh_token("user")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(conn))
    params = params_with_outcomes(server, ["hang"], "longwait")
    import threading

    def finish_later():
        task = next(t for t in server.sim.tasks.values() if t.name == params["taskName"])
        server.sim.force(task.task_id, status="running", outcomes=["done"])

    threading.Timer(8.0, finish_later).start()  # the wait lasts more than two token lifetimes
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.5, "
                  f"deferrable={deferrable})", params=repr(params))
    assert run.states == {"submit": "success"}
