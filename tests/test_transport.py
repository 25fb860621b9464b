"""Retries of answers that are not PanDA's envelope, job-id calls split across requests, and big
answers parsed off the event loop."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaNotEnvelopeError
from airflow_provider_panda.hooks.panda import AsyncPandaClient, PandaHook

LOG = logging.getLogger("test")
NOT_ENVELOPES = ["html", "cut", "body:<html><body>Service Unavailable</body></html>", "body:[1, 2]"]


def async_run(conn_id: str, method: str, *args):
    async def go():
        client = await AsyncPandaClient.for_connection(conn_id, LOG)
        try:
            return await getattr(client, method)(*args)
        finally:
            await client.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("fault", NOT_ENVELOPES)
@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_answer_that_is_not_the_envelope_is_retried(panda_server, conn_env, fault, path):
    conn_id = conn_env("panda_retry", max_retries=2)
    panda_server.panda.faults.extend([fault, fault])
    before = panda_server.panda.requests["task/get_job_ids"]
    if path == "sync":
        assert PandaHook(conn_id).get_job_ids(1) == []
    else:
        assert async_run(conn_id, "get_job_ids", 1) == []
    assert panda_server.panda.requests["task/get_job_ids"] - before == 3 and not panda_server.panda.faults


def test_retries_of_non_envelope_answers_end(panda_server, conn_env):
    conn_id = conn_env("panda_retry_end", max_retries=2)
    panda_server.panda.faults.extend(["html"] * 3)
    with pytest.raises(PandaNotEnvelopeError, match="not JSON"):
        PandaHook(conn_id).get_job_ids(1)
    assert not panda_server.panda.faults


def test_a_submission_is_not_repeated_after_a_cut_answer(panda_server, hook):
    """A plain submission (no uniqueTaskName) is not safe to repeat: a cut answer is not resent;
    the task it made is found by name instead."""
    from conftest import task_params

    panda_server.panda.faults.append("cut@task/submit")
    before = panda_server.panda.requests["task/submit"]
    params = task_params("cutsubmit", uniqueTaskName=False)
    task_id = hook.submit_task(params)
    assert panda_server.panda.requests["task/submit"] - before == 1
    assert [t.task_id for t in panda_server.sim.tasks.values() if t.name == params["taskName"]] == [task_id]


@pytest.fixture(scope="module")
def big_task(panda_server):
    """A running task of 12,000 jobs (more than two calls' worth of job ids)."""
    [task_id] = panda_server.sim.bulk_running(1, panda_server.panda.users["user"], ["hang"], jobs=12_000)
    return task_id


@pytest.mark.parametrize("method,calls_to", [("get_job_status", "job/get_description"),
                                             ("get_full_job_status", "job/get_description_incl_archive")])
def test_more_job_ids_than_one_call_takes_are_split(panda_server, hook, big_task, method, calls_to):
    ids = hook.get_job_ids(big_task)
    assert len(ids) == 12_000
    before = panda_server.panda.requests[calls_to]
    jobs = getattr(hook, method)(ids)
    assert [j["PandaID"] for j in jobs] == ids  # all of them, in order (the server cuts a call at 5,500)
    assert panda_server.panda.requests[calls_to] - before == -(-len(ids) // api.MAX_JOB_IDS_PER_CALL)


def test_kill_jobs_is_split(panda_server, prod_hook):
    [task_id] = panda_server.sim.bulk_running(1, panda_server.panda.users["user"], ["hang"], jobs=2)
    ids = [*prod_hook.get_job_ids(task_id), *range(10**9, 10**9 + 11_000)]  # 2 real jobs, then unknown ids
    before = panda_server.panda.requests["job/kill"]
    answers = prod_hook.kill_jobs(ids)
    assert len(answers) == len(ids) and answers[-1] is False
    assert panda_server.panda.requests["job/kill"] - before == 3


def test_the_async_client_splits_and_parses_big_answers_off_the_loop(panda_server, conn_env, big_task,
                                                                     monkeypatch):
    from airflow_provider_panda import transport

    conn_id = conn_env("panda_big")
    threads: list[str] = []
    parse = transport.parse

    def recording(status_code, content, cfg=None):
        threads.append("loop" if threading.current_thread() is threading.main_thread() else "thread")
        return parse(status_code, content, cfg)

    monkeypatch.setattr(transport, "parse", recording)
    ids = PandaHook(conn_id).get_job_ids(big_task)
    threads.clear()
    jobs = async_run(conn_id, "get_full_job_status", ids)
    assert [j["PandaID"] for j in jobs] == ids
    assert threads == ["thread"] * 3  # three calls, each answer (MBs) parsed in a worker thread
