"""PandaTaskTrigger on an asyncio loop against the local server."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import params_with_outcomes, task_params, wait_status

from airflow_provider_panda.triggers.wait import PandaTaskTrigger


@pytest.fixture(autouse=True)
def _conn(conn_env, panda_server):
    conn_env()
    yield
    panda_server.panda.faults.clear()  # a failing test must not leave faults to the next one
    panda_server.panda.fault_rate = 0.0


async def first_event(trigger: PandaTaskTrigger):
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def run(trigger: PandaTaskTrigger) -> dict:
    return asyncio.run(asyncio.wait_for(first_event(trigger), timeout=120))


def test_serialise_round_trip():
    from airflow.sdk.module_loading import import_string

    trigger = PandaTaskTrigger(jedi_task_id=7, panda_conn_id="c", poll_interval=2.5,
                               success_statuses=["done", "finished"],
                               failure_statuses=["failed"], end_time=123.0, cancel_on_kill=False,
                               stale_status="failed", carry={"retries_done": 1})
    classpath, kwargs = trigger.serialize()
    again = import_string(classpath)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    import json

    assert json.loads(json.dumps(kwargs)) == kwargs  # primitives only


def test_success_event(hook):
    task_id = hook.submit_task(task_params("trig"))
    event = run(PandaTaskTrigger(task_id, poll_interval=0.02, carry={"x": 1}))
    assert event == {"status": "success", "jedi_task_id": task_id, "task_status": "done",
                     "message": f"PanDA task {task_id} is done", "carry": {"x": 1}}


def test_failure_event(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["exhausted"], "trigfail"))
    event = run(PandaTaskTrigger(task_id, poll_interval=0.02))
    assert event["status"] == "failure" and event["task_status"] == "exhausted"


def test_timeout_event(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "trigtmo"))
    wait_status(hook, task_id, {"running"})  # what the wait last read is running, however slow the machine
    event = run(PandaTaskTrigger(task_id, poll_interval=0.02, end_time=time.time() + 3))
    assert event["status"] == "timeout" and event["task_status"] == "running"


def test_stale_status_does_not_end_the_wait(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["failed", "done"], "trigstale"))
    wait_status(hook, task_id, {"failed"})
    panda_server.sim.clock.freeze(True)  # the retry is registered but JEDI has not acted yet
    try:
        hook.retry_task(task_id)

        async def scenario():
            reads = status_reads(panda_server)
            waiting = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, poll_interval=0.02,
                                                                         stale_status="failed")))
            await until(lambda: status_reads(panda_server) >= reads + 5)  # "failed" read five times
            assert not waiting.done()  # still "failed": the stale status is not the retry's outcome
            panda_server.sim.clock.freeze(False)  # JEDI acts on the retry: toretry, ..., done
            return await asyncio.wait_for(waiting, 60)

        event = asyncio.run(scenario())
    finally:
        panda_server.sim.clock.freeze(False)
    assert event["status"] == "success"


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_transient_failures_keep_the_trigger_waiting(hook, panda_server, conn_env, shared):
    """No retries in the client (max_retries 0): with its own reads, the trigger's own branch must
    absorb 5xx answers, HTML pages and cut bodies."""
    conn_env(max_retries=0)
    task_id = hook.submit_task(task_params("trigflaky"))
    panda_server.panda.faults.extend(["503", "html", "500", "cut", "502", "body:<html>login</html>"])
    event = run(PandaTaskTrigger(task_id, poll_interval=0.02, shared_poller=shared))
    assert event["status"] == "success" and not panda_server.panda.faults


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_the_wait_survives_a_ten_minute_outage(hook, panda_server, conn_env, monkeypatch, shared):
    """Every request fails (5xx, proxy pages, cut bodies) while the wait's clock moves on by 11 minutes
    (past the not-found grace): the wait goes on and ends when the server is back."""
    import types

    from airflow_provider_panda import waiting

    conn_env(max_retries=1)
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "outage"))
    wait_status(hook, task_id, {"running"})

    async def scenario():
        trigger = PandaTaskTrigger(task_id, poll_interval=0.05, shared_poller=shared)
        event = asyncio.ensure_future(first_event(trigger))
        await until(lambda: status_reads(panda_server) >= 1)
        panda_server.panda.fault_kinds = ["503", "502", "500", "html", "cut"]
        panda_server.panda.fault_rate = 1.0
        later = types.SimpleNamespace(monotonic=lambda: time.monotonic() + 660, time=time.time)
        monkeypatch.setattr(waiting, "time", later)
        try:
            failed = api_requests(panda_server)
            await until(lambda: api_requests(panda_server) >= failed + 60)  # sixty failed requests
            assert not event.done()
        finally:
            panda_server.panda.fault_rate = 0.0
        await asyncio.to_thread(panda_server.sim.force, task_id, "running", ["done"])
        return await asyncio.wait_for(event, 60)

    payload = asyncio.run(scenario())
    assert (payload["status"], payload["task_status"]) == ("success", "done")


def status_reads(server) -> int:
    return server.panda.requests["task/get_status"] + server.panda.requests["task/get_tasks_modified_since"]


def api_requests(server) -> int:
    return sum(n for call, n in server.panda.requests.items() if "/" in call and not call.startswith("oidc"))


async def until(predicate, timeout: float = 120.0) -> None:
    """Wait on the event loop until predicate() is true (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_auth_failure_is_an_error_event(hook, panda_server, monkeypatch):
    import json

    conn = panda_server.connection()
    conn["password"] = "bad.token.value"
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(conn))
    event = run(PandaTaskTrigger(1, poll_interval=0.02))
    assert event["status"] == "error" and "Token authentication failed" in event["message"]


def test_no_blocking_http_on_the_event_loop(hook, monkeypatch):
    import requests

    def refuse(*args, **kwargs):
        raise AssertionError("synchronous HTTP from the trigger")

    task_id = hook.submit_task(task_params("trignoblock"))
    monkeypatch.setattr(requests.Session, "send", refuse)
    assert run(PandaTaskTrigger(task_id, poll_interval=0.02))["status"] == "success"


def test_on_kill_kills_the_panda_task(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "trigkill"))
    wait_status(hook, task_id, {"running"})
    asyncio.run(PandaTaskTrigger(task_id, cancel_on_kill=False).on_kill())
    assert hook.get_task_status(task_id) == "running"
    asyncio.run(PandaTaskTrigger(task_id, cancel_on_kill=True).on_kill())
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"
    asyncio.run(PandaTaskTrigger(task_id, cancel_on_kill=True).on_kill())  # already aborted: no error


def test_on_kill_kills_a_task_jedi_has_not_refined_yet(hook, panda_server):
    """The server refuses the owner's kill until JEDI has refined a just-submitted task: on_kill tries
    again within the triggerer's budget."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "trigkillyoung"))
    wait_status(hook, task_id, {"running"})
    panda_server.sim.registered(task_id, reads=2)  # the owner check of two kills sees it unrefined
    asyncio.run(PandaTaskTrigger(task_id, cancel_on_kill=True).on_kill())
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_the_timeout_fires_at_the_deadline_while_every_read_fails(hook, panda_server, monkeypatch, shared):
    """Every request fails (transiently) and each read, with its retries and backoff, takes longer
    than the whole wait may: the timeout event still comes at the deadline, not after the reads."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "deadline"))
    wait_status(hook, task_id, {"running"})
    import json

    slow = panda_server.connection(max_retries=6, retry_wait=2.0)  # one read: at least 1+2+4+8+16+30 s of backoff
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(slow))
    panda_server.panda.fault_kinds, panda_server.panda.fault_rate = ["503"], 1.0
    end_time = time.time() + 1.0
    event = run(PandaTaskTrigger(task_id, poll_interval=0.05, end_time=end_time, shared_poller=shared))
    late = time.time() - end_time
    assert (event["status"], event["task_status"]) == ("timeout", None)
    assert 0 <= late < 20  # at the deadline (give or take a loaded machine), not after a read's 61 s of backoff


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_a_deadline_already_past_still_reads_once(hook, panda_server, shared):
    """A wait resumed after its deadline (the triggerer was down) still takes one reading, so a task
    that ended meanwhile is not taken for a timeout: also when the shared poller's round is slower
    than a poll interval (a 3 MB sweep, a loaded server), here its answers held back 2 s each."""
    task_id = hook.submit_task(task_params("pastdeadline"))
    wait_status(hook, task_id, {"done"})
    panda_server.panda.faults.extend(["slow:2@task/get_tasks_modified_since"] * 3)
    event = run(PandaTaskTrigger(task_id, poll_interval=0.05, end_time=time.time() - 60, shared_poller=shared))
    assert (event["status"], event["task_status"]) == ("success", "done")


@pytest.fixture(scope="module")
def tls_server():
    from airflow_provider_panda.testing.server import LocalPandaServer

    with LocalPandaServer(step=0.05, client_certs=True) as server:
        yield server


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_a_proxy_that_expires_during_the_wait_ends_it_with_an_error(tls_server, monkeypatch, tmp_path, shared):
    """The x509 proxy expires mid-wait (here: replaced by an expired one): no round can mend it, so
    the wait ends with the certificate error naming the file, as the sync path does."""
    import json

    from airflow_provider_panda.hooks.panda import PandaHook

    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user")
    conn = {"conn_type": "panda", "host": tls_server.url,
            "extra": {"vo": "atlas", "retry_wait": 0.01, "max_retries": 0, "ca_path": tls_server.tls[0],
                      "x509_proxy": proxy}}
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_PROXY", json.dumps(conn))
    task_id = PandaHook("panda_proxy").submit_task(params_with_outcomes(tls_server, ["hang"], "proxyexpiry"))

    async def scenario():
        wait = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, "panda_proxy", poll_interval=0.05,
                                                                  shared_poller=shared)))
        reads = status_reads(tls_server)
        await until(lambda: status_reads(tls_server) >= reads + 2)  # the wait is under way
        tls_server.x509_proxy(proxy, "user", lifetime=-60)
        return await asyncio.wait_for(wait, 60)

    event = asyncio.run(scenario())
    assert (event["status"], event["error_type"]) == ("error", "PandaCertificateError")
    assert f"x509 proxy {proxy} expired" in event["message"]


def test_on_kill_keeps_within_the_triggerers_budget(hook, panda_server, monkeypatch, capsys):
    """The triggerer gives on_kill() [triggerer] on_kill_timeout seconds: a kill whose answer is late
    (the server slow, the client's 60 s timeout) is given up within that budget, with a clear log."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "killslow"))
    wait_status(hook, task_id, {"running"})
    monkeypatch.setenv("AIRFLOW__TRIGGERER__ON_KILL_TIMEOUT", "2")
    panda_server.panda.faults.append("slow:120@task/kill")  # the kill acts, its answer comes 120 s late
    capsys.readouterr()
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(PandaTaskTrigger(task_id, cancel_on_kill=True).on_kill(), 200))
    # within the budget (2 s, plus a busy machine's delays), not the client's 60 s timeout nor the 120 s
    assert time.monotonic() - started < 50
    assert f"PanDA task {task_id} may not be killed" in "".join(capsys.readouterr())
