"""OIDC refresh end to end against the local server's auth config, discovery and token endpoints."""

from __future__ import annotations

import json

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes, wait_for

from airflow_provider_panda.exceptions import PandaAuthError
from airflow_provider_panda.hooks.panda import PandaHook


@pytest.fixture
def short_tokens(panda_server, monkeypatch):
    """Tokens that live 10 s, refreshed when they have 6 s left: a wait of several lifetimes
    outlives the first token and each refreshed one. (4 s and 1.5 s failed once on a machine so
    loaded that a request took longer than the margin to reach the server.)"""
    from airflow_provider_panda import auth

    monkeypatch.setattr(auth, "REFRESH_MARGIN", 6.0)
    lifetime = panda_server.issuer.lifetime
    panda_server.issuer.lifetime = 10.0
    yield panda_server
    panda_server.issuer.lifetime = lifetime


@pytest.fixture
def idp(panda_server):
    """Set the local IdP's mode ("ok", "503", "down"); back to "ok" afterwards."""

    def mode(value: str) -> None:
        panda_server.panda.idp = value

    yield mode
    panda_server.panda.idp = "ok"
    panda_server.issuer.rotate = False


def refresh_conn(server, monkeypatch, conn_id: str, lifetime: float, **extra) -> str:
    """A connection whose id token lives ``lifetime`` s, with a refresh token of the local IdP."""
    conn = server.connection(retry_wait=0.01, **extra)
    conn["password"] = server.token("user", lifetime=lifetime)
    conn["extra"]["refresh_token"] = server.refresh_token("user")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


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
    with pytest.raises(PandaAuthError, match="Signature has expired") as refused:
        PandaHook("panda_x").get_job_ids(1)
    assert "paste a fresh one into the connection, or set its refresh token or token file" in str(refused.value)


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
    before = panda_server.panda.requests["oidc/token"]
    assert PandaHook("panda_f").get_user_name_from_token()[0] == "Alice Analyst"
    assert PandaHook("panda_f").get_job_ids(1) == []
    assert panda_server.panda.requests["oidc/token"] == before + 1  # the 10 s token was refreshed, once


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_wait_longer_than_a_token_lifetime_succeeds(short_tokens, monkeypatch, deferrable):
    server = short_tokens
    conn = server.connection(retry_wait=0.01)
    conn["extra"]["refresh_token"] = server.refresh_token("user")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(conn))
    params = params_with_outcomes(server, ["hang"], "longwait")
    import threading

    before = server.panda.requests["oidc/token"]

    def finish_after_two_refreshes():
        """The wait must outlive two tokens: end the task once two refresh grants were made."""
        wait_for(lambda: server.panda.requests["oidc/token"] - before >= 2, timeout=240, interval=0.2)
        task = next(t for t in server.sim.tasks.values() if t.name == params["taskName"])
        server.sim.force(task.task_id, status="running", outcomes=["done"])

    threading.Thread(target=finish_after_two_refreshes, daemon=True).start()
    run = run_dag(f"SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.5, "
                  f"deferrable={deferrable})", params=repr(params))
    assert run.states == {"submit": "success"}
    assert server.panda.requests["oidc/token"] - before >= 2  # the first token and a refreshed one expired


def test_an_idp_outage_keeps_a_valid_token(panda_server, monkeypatch, idp):
    """The IdP down or failing while the token in hand is valid: calls go on with it, and the IdP is
    not asked again on every call."""
    hook = PandaHook(refresh_conn(panda_server, monkeypatch, "panda_idp", lifetime=120))  # within the margin
    for mode in ("503", "down"):
        idp(mode)
        before = panda_server.panda.requests["oidc/token"]
        assert hook.get_job_ids(1) == [] and hook.get_job_ids(2) == []
        assert panda_server.panda.requests["oidc/token"] - before <= 1  # tried once, then waits RETRY_AFTER
        from airflow_provider_panda import auth

        auth._GRANTS.clear()  # forget the back-off so the next mode is tried too


@pytest.mark.parametrize("mode", ["503", "down"])
def test_an_idp_outage_with_an_expired_token_is_transient(panda_server, monkeypatch, idp, mode):
    from airflow_provider_panda.exceptions import PandaServerError, PandaTransportError
    from airflow_provider_panda.transport import is_transient

    hook = PandaHook(refresh_conn(panda_server, monkeypatch, f"panda_idp_{mode}", lifetime=-5, max_retries=2))
    idp(mode)
    before = panda_server.panda.requests["oidc/token"]
    with pytest.raises((PandaServerError, PandaTransportError)) as info:
        hook.get_job_ids(1)
    assert is_transient(info.value)
    if mode == "503":
        assert panda_server.panda.requests["oidc/token"] - before == 3  # retried like any transient fault
    idp("ok")
    assert hook.get_job_ids(1) == []  # the IdP is back: refreshed, and the call goes through


def test_a_deferred_wait_outlives_an_idp_outage(short_tokens, monkeypatch, idp):
    """Waits in the triggerer keep going while the IdP fails and the token is still valid (due for a
    refresh, yet valid for longer than a busy machine takes for the rounds the test waits on)."""
    import asyncio

    from airflow_provider_panda import auth
    from airflow_provider_panda.triggers.wait import PandaTaskTrigger

    server = short_tokens
    monkeypatch.setattr(auth, "REFRESH_MARGIN", 1200.0)
    hook = PandaHook(refresh_conn(server, monkeypatch, "panda_default", lifetime=600))
    task_id = hook.submit_task(params_with_outcomes(server, ["hang"], "idpwait"))

    async def scenario():
        waiting = asyncio.ensure_future(_first(PandaTaskTrigger(task_id, poll_interval=0.2)))
        idp("503")
        before = server.panda.requests["oidc/token"]
        await _until(lambda: server.panda.requests["oidc/token"] > before)  # a refresh was tried and failed
        rounds = server.panda.requests["task/get_tasks_modified_since"]
        await _until(lambda: server.panda.requests["task/get_tasks_modified_since"] >= rounds + 3)
        assert not waiting.done()  # three more rounds, and every wait still waits
        idp("ok")
        await asyncio.to_thread(server.sim.force, task_id, "running", ["done"])
        return await asyncio.wait_for(waiting, 60)

    event = asyncio.run(scenario())
    assert event["status"] == "success", event


def test_a_rotated_refresh_token_is_kept(panda_server, monkeypatch, idp):
    """An IdP that rotates refresh tokens retires each one it uses: the next refresh must use the new one."""
    from airflow_provider_panda import auth

    # every token, refreshed ones too, is due for a refresh at once, and valid for longer than a busy
    # machine takes between minting it and using it
    monkeypatch.setattr(auth, "REFRESH_MARGIN", 1200.0)
    monkeypatch.setattr(panda_server.issuer, "lifetime", 600.0)
    panda_server.issuer.rotate = True
    hook = PandaHook(refresh_conn(panda_server, monkeypatch, "panda_rot", lifetime=600))
    before = panda_server.panda.requests["oidc/token"]
    for task_id in (1, 2, 3):
        assert hook.get_job_ids(task_id) == []
    assert panda_server.panda.requests["oidc/token"] - before == 3  # three refreshes, each with the newest token


def test_a_token_changed_in_the_connection_reaches_running_waits(panda_server, monkeypatch):
    """A long-lived poller re-reads its connection: a token renewed there replaces one that expires.

    The old token expires when the test moves the server's clock on, once the poller has sent the
    renewed one: on a busy machine the rounds only come later, the order stays the same."""
    import asyncio

    from airflow_provider_panda.hooks import panda as hook_module
    from airflow_provider_panda.triggers.wait import PandaTaskTrigger

    monkeypatch.setattr(hook_module, "RELOAD_EVERY", 0.3)
    conn = panda_server.connection(retry_wait=0.01, max_retries=0)
    hook = PandaHook(_install(monkeypatch, "panda_default", conn))
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "renewed"))
    conn["password"] = old = panda_server.token("user", lifetime=600)  # no refresh token
    _install(monkeypatch, "panda_default", conn)
    polls = panda_server.panda.requests
    issuer = panda_server.issuer
    monkeypatch.setattr(issuer, "clock_offset", 0.0)

    async def scenario():
        waiting = asyncio.ensure_future(_first(PandaTaskTrigger(task_id, poll_interval=0.2)))
        await _until(lambda: issuer.checked[old] >= 2)  # the poller waits with the first token
        conn["password"] = new = panda_server.token("user", lifetime=3600)  # renewed in the connection
        _install(monkeypatch, "panda_default", conn)
        await _until(lambda: issuer.checked[new] >= 1)  # the poller re-read its connection
        issuer.clock_offset = 1200.0  # the first token has expired; the renewed one lives on
        rounds = polls["task/get_tasks_modified_since"]
        await _until(lambda: polls["task/get_tasks_modified_since"] >= rounds + 3)
        assert not waiting.done()
        await asyncio.to_thread(panda_server.sim.force, task_id, "running", ["done"])
        return await asyncio.wait_for(waiting, 60)

    event = asyncio.run(scenario())
    assert event["status"] == "success", event


async def _until(predicate, timeout: float = 120.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _install(monkeypatch, conn_id: str, conn: dict) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


async def _first(trigger):
    async for event in trigger.run():
        return event.payload
