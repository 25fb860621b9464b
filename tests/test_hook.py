"""Every PandaHook method against the local server over real HTTP: success and each failure shape."""

from __future__ import annotations

import gzip

import pytest
from conftest import params_with_outcomes, task_params, wait_status

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaCallFailed,
    PandaCommandRejected,
    PandaConnectionConfigError,
    PandaDuplicateTaskError,
    PandaInputError,
    PandaNotFoundError,
    PandaPermissionError,
    PandaServerError,
    PandaTransportError,
)
from airflow_provider_panda.hooks.panda import PandaHook


def submit_and_wait(hook, params, statuses=api.TASK_STOPPED):
    task_id = hook.submit_task(params)
    return task_id, wait_status(hook, task_id, statuses)


def test_hello_needs_no_credentials(panda_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_ANON", f'{{"conn_type": "panda", "host": "{panda_server.url}"}}')
    assert PandaHook("panda_anon").hello() == ""


def test_authenticated_call_without_credentials_fails_before_sending(panda_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_ANON", f'{{"conn_type": "panda", "host": "{panda_server.url}"}}')
    before = sum(panda_server.panda.requests.values())
    with pytest.raises(PandaConnectionConfigError, match="no credentials"):
        PandaHook("panda_anon").get_task_status(1)
    assert sum(panda_server.panda.requests.values()) == before


def test_submit_runs_to_done_with_jobs(hook):
    task_id, status = submit_and_wait(hook, task_params("done"))
    assert isinstance(task_id, int) and status == "done"
    job_ids = hook.get_job_ids(task_id)
    assert len(job_ids) == 2
    jobs = hook.get_job_status(job_ids)
    assert [j["jobStatus"] for j in jobs] == ["finished", "finished"]
    assert all(j["jediTaskID"] == task_id for j in jobs)


def test_task_status_of_unknown_task_is_not_found(hook):
    with pytest.raises(PandaNotFoundError, match="Task not found"):
        hook.get_task_status(999_999_999)


def test_task_params_round_trip_and_unknown(hook):
    params = task_params("params", nEvents=4)
    task_id, _ = submit_and_wait(hook, params)
    got = hook.get_task_params(task_id)
    assert got["taskName"] == params["taskName"] and got["nEvents"] == 4
    assert got["userName"] == "Alice Analyst"  # the server sets the owner, as PanDA does
    with pytest.raises(PandaNotFoundError):
        hook.get_task_params(999_999_999)


def test_job_ids_of_unknown_task_are_empty(hook):
    assert hook.get_job_ids(999_999_999) == []


def test_duplicate_active_task_carries_existing_id(hook, panda_server):
    params = params_with_outcomes(panda_server, ["hang"], "dup")
    task_id = hook.submit_task(params)
    wait_status(hook, task_id, {"running"})
    with pytest.raises(PandaDuplicateTaskError) as info:
        hook.submit_task(params)
    assert info.value.code == api.SubmitCode.DUPLICATE_JEDI and info.value.task_id == task_id
    assert "is in the running state" in str(info.value)


def test_duplicate_while_only_deft_knows_the_task(hook, panda_server):
    panda_server.sim.clock.freeze(True)
    try:
        params = task_params("deft")
        task_id = hook.submit_task(params)
        with pytest.raises(PandaDuplicateTaskError) as info:
            hook.submit_task(params)
        assert info.value.code == api.SubmitCode.DUPLICATE_DEFT and info.value.task_id == task_id
        with pytest.raises(PandaNotFoundError):  # JEDI has not seen it yet
            hook.get_task_status(task_id)
    finally:
        panda_server.sim.clock.freeze(False)


def test_resubmitting_a_finished_name_reexecutes_it_loudly(hook, capsys):
    params = task_params("incexec")
    task_id, _ = submit_and_wait(hook, params)
    capsys.readouterr()
    assert hook.submit_task(params) == task_id
    out = "".join(capsys.readouterr())
    assert "warning" in out.lower() and "re-executes the existing task" in out


def test_submission_without_unique_name_is_never_deduplicated(hook):
    params = task_params("nouniq")
    params.pop("uniqueTaskName")
    assert hook.submit_task(params) != hook.submit_task(params)


def test_submit_with_unknown_parent_is_rejected(hook):
    with pytest.raises(PandaCommandRejected) as info:
        hook.submit_task(task_params("orphan"), parent_task_id=999_999_999)
    assert info.value.code == api.SubmitCode.PARENT_NOT_FOUND


def test_kill_then_aborted_and_jobs_cancelled(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "kill"))
    wait_status(hook, task_id, {"running"})
    assert "command=kill is registered" in hook.kill_task(task_id)
    assert wait_status(hook, task_id, {"aborted"}) == "aborted"
    assert {j["jobStatus"] for j in hook.get_job_status(hook.get_job_ids(task_id))} == {"cancelled"}


def test_kill_of_done_task_is_rejected_with_code_4(hook):
    task_id, _ = submit_and_wait(hook, task_params("killdone"))
    with pytest.raises(PandaCommandRejected) as info:
        hook.kill_task(task_id)
    assert info.value.code == api.CommandCode.BAD_STATUS and "done status" in str(info.value)


def test_kill_of_someone_elses_task_is_denied(hook, conn_env, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "owner"))
    wait_status(hook, task_id, {"running"})
    with pytest.raises(PandaPermissionError, match="not the task owner"):
        PandaHook(conn_env("panda_bob", user="other")).kill_task(task_id)


def test_kill_of_unknown_task(hook, prod_hook):
    with pytest.raises(PandaPermissionError):  # the ownership check runs first for a normal user
        hook.kill_task(999_999_999)
    with pytest.raises(PandaNotFoundError):  # with the production role the command says code 2
        prod_hook.kill_task(999_999_999)


@pytest.mark.parametrize("soft,jobs,final", [(False, "cancelled", "failed"), (True, "finished", "done")])
def test_finish(hook, panda_server, soft, jobs, final):
    """As on the real server: a hard finish kills the running jobs (no job succeeded: failed);
    a soft one lets them complete (all succeeded: done)."""
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "finish"))
    wait_status(hook, task_id, {"running"})
    assert "command=finish is registered" in hook.finish_task(task_id, soft=soft)
    assert wait_status(hook, task_id, api.TASK_STOPPED) == final
    assert {j["jobStatus"] for j in hook.get_job_status(hook.get_job_ids(task_id))} == {jobs}


def test_retry_failed_task_reaches_done(hook, panda_server):
    task_id, status = submit_and_wait(hook, params_with_outcomes(panda_server, ["failed", "done"], "retry"))
    assert status == "failed"
    assert "command=retry is registered" in hook.retry_task(task_id)
    assert wait_status(hook, task_id, {"done"}) == "done"
    jobs = hook.get_full_job_status(hook.get_job_ids(task_id))
    assert sorted(j["jobStatus"] for j in jobs) == ["failed", "failed", "finished", "finished"]


def test_retry_with_new_params_merges_them(hook, panda_server):
    task_id, _ = submit_and_wait(hook, params_with_outcomes(panda_server, ["failed", "done"], "newp"))
    assert "will be re-executed" in hook.retry_task(task_id, new_params={"ramCount": 4000})
    assert hook.get_task_params(task_id)["ramCount"] == 4000
    assert wait_status(hook, task_id, {"done"}) == "done"


def test_retry_of_done_task_is_rejected(hook):
    task_id, _ = submit_and_wait(hook, task_params("retrydone"))
    with pytest.raises(PandaCommandRejected) as info:
        hook.retry_task(task_id)
    assert info.value.code == api.CommandCode.BAD_STATUS


def test_retry_of_exhausted_task_needs_production_role(hook, prod_hook, panda_server):
    task_id, status = submit_and_wait(hook, params_with_outcomes(panda_server, ["exhausted", "done"], "exh"))
    assert status == "exhausted"
    with pytest.raises(PandaCommandRejected, match="production role is missing"):
        hook.retry_task(task_id)
    prod_hook.retry_task(task_id)
    assert wait_status(hook, task_id, {"done"}) == "done"


def test_resume_needs_production_role_and_a_paused_task(hook, prod_hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "resume"))
    wait_status(hook, task_id, {"running"})
    with pytest.raises(PandaPermissionError, match="production or pilot role required"):
        hook.resume_task(task_id)
    with pytest.raises(PandaCommandRejected) as info:
        prod_hook.resume_task(task_id)
    assert info.value.code == api.CommandCode.BAD_STATUS
    panda_server.sim.force(task_id, status="paused")
    assert "command=resume is registered" in prod_hook.resume_task(task_id)
    assert hook.get_task_status(task_id) == "running"


def test_reactivate_needs_production_role(hook, prod_hook):
    task_id, _ = submit_and_wait(hook, task_params("react"))
    with pytest.raises(PandaPermissionError):
        hook.reactivate_task(task_id)
    assert "was reactivated" in prod_hook.reactivate_task(task_id)
    assert wait_status(hook, task_id, {"done"}) == "done"


def test_job_status_of_unknown_id_is_none(hook):
    task_id, _ = submit_and_wait(hook, task_params("jobs"))
    job_ids = hook.get_job_ids(task_id)
    full = hook.get_full_job_status(job_ids + [1])
    assert full[-1] is None and full[0]["PandaID"] == job_ids[0]
    assert hook.get_job_status([1]) == [None]


def test_failed_jobs_carry_error_diagnostics(hook, panda_server):
    task_id, _ = submit_and_wait(hook, params_with_outcomes(panda_server, ["failed"], "diag"))
    job = hook.get_job_status(hook.get_job_ids(task_id))[0]
    assert job["jobStatus"] == "failed" and job["pilotErrorCode"] == 1305 and job["pilotErrorDiag"]


def test_kill_jobs(hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "killjobs"))
    wait_status(hook, task_id, {"running"})
    job_ids = hook.get_job_ids(task_id)
    assert hook.kill_jobs([job_ids[0], 1]) == [True, False]
    assert hook.get_job_status([job_ids[0]])[0]["jobStatus"] == "cancelled"


def test_user_job_metadata(hook, panda_server):
    task_id, _ = submit_and_wait(hook, task_params("meta"))
    metadata = hook.get_user_job_metadata(task_id)
    assert set(metadata) == {str(j) for j in hook.get_job_ids(task_id)}
    failed_id, _ = submit_and_wait(hook, params_with_outcomes(panda_server, ["failed"], "nometa"))
    assert hook.get_user_job_metadata(failed_id) == {}


def test_send_command_to_job(hook, prod_hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "cmd"))
    wait_status(hook, task_id, {"running"})
    job_id = hook.get_job_ids(task_id)[0]
    with pytest.raises(PandaPermissionError):
        hook.send_command_to_job(job_id, "tobekilled")
    assert "tobekilled" in prod_hook.send_command_to_job(job_id, "tobekilled")
    with pytest.raises(PandaCallFailed, match="not found"):
        prod_hook.send_command_to_job(1, "tobekilled")


def test_file_recovery_returns_log_url(hook, conn_env, panda_server):
    task_id, _ = submit_and_wait(hook, task_params("recov"))
    url = hook.send_file_recovery_request(task_id, dry_run=True)
    assert url.startswith(panda_server.url + "/cache/jedilog/lost_file_recovery.")
    with pytest.raises(PandaPermissionError):
        PandaHook(conn_env("panda_bob", user="other")).send_file_recovery_request(task_id)


def test_put_file_and_reuse_sandbox(hook, tmp_path, panda_server):
    sandbox = tmp_path / "sources.abc.tar.gz"
    sandbox.write_bytes(gzip.compress(b"payload " * 100))
    assert hook.put_file(str(sandbox)) == sandbox.name
    assert panda_server.panda.handlers.cache[sandbox.name] == sandbox.read_bytes()
    with pytest.raises(PandaCallFailed, match="cannot overwrite"):
        hook.put_file(str(sandbox))
    uploads = panda_server.panda.requests["file_server/upload_cache_file"]
    assert hook.put_file(str(sandbox), reuse_sandbox=True) == sandbox.name
    assert panda_server.panda.requests["file_server/upload_cache_file"] == uploads  # not sent again


def test_put_file_checks_before_sending(hook, tmp_path, panda_server):
    before = panda_server.panda.requests["file_server/upload_cache_file"]
    with pytest.raises(PandaInputError, match="does not exist"):
        hook.put_file(str(tmp_path / "missing.tgz"))
    with pytest.raises(PandaInputError, match="not a file"):
        hook.put_file(str(tmp_path))
    big = tmp_path / "user.big.tgz"
    big.write_bytes(b"x" * (api.SANDBOX_NO_BUILD_LIMIT + 1))
    with pytest.raises(PandaInputError, match="at most"):
        hook.put_file(str(big))
    assert panda_server.panda.requests["file_server/upload_cache_file"] == before


def test_put_file_to_cache_server(conn_env, tmp_path, panda_server):
    hook = PandaHook(conn_env("panda_cache", cache_url=panda_server.url))
    path = tmp_path / "user.small.txt"
    path.write_text("hi")
    assert hook.put_file(str(path), use_cache_server=True) == path.name


def test_user_name_from_token(hook):
    assert hook.get_user_name_from_token() == ("Alice Analyst", ["atlas"], "alice")


def test_tasks_modified_since(hook):
    task_id, _ = submit_and_wait(hook, task_params("since"))
    tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
    assert tasks[task_id]["status"] == "done" and tasks[task_id]["jediTaskID"] == task_id
    with pytest.raises(PandaInputError):
        hook.get_tasks_modified_since("yesterday")


def test_test_connection(hook, panda_server, monkeypatch):
    ok, message = hook.test_connection()
    assert ok, message
    conn = panda_server.connection()
    conn["password"] = "not.a.token"
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_BAD", __import__("json").dumps(conn))
    ok, message = PandaHook("panda_bad").test_connection()
    assert not ok and "Token authentication failed" in message


def test_bad_token_is_an_auth_error_without_the_token(panda_server, monkeypatch):
    conn = panda_server.connection()
    forged = conn["password"][:-4] + "AAAA"
    conn["password"] = forged
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_FORGED", __import__("json").dumps(conn))
    with pytest.raises(PandaAuthError) as info:
        PandaHook("panda_forged").get_task_status(1)
    assert info.value.status_code == 403 and forged not in str(info.value)


# --- retries ------------------------------------------------------------------------------------


def test_transient_faults_are_retried(hook, panda_server):
    task_id, _ = submit_and_wait(hook, task_params("faults"))
    panda_server.panda.faults.extend(["500", "503", "429"])
    assert hook.get_task_status(task_id) == "done"
    assert not panda_server.panda.faults


def test_retries_stop_and_raise(conn_env, panda_server):
    hook = PandaHook(conn_env("panda_few", max_retries=1))
    panda_server.panda.faults.extend(["502", "502"])
    with pytest.raises(PandaServerError) as info:
        hook.get_task_status(1)
    assert info.value.status_code == 502


def test_client_errors_are_not_retried(hook, panda_server):
    before = panda_server.panda.requests["task/get_status"]
    panda_server.panda.faults.append("404")
    with pytest.raises(Exception) as info:
        hook.get_task_status(1)
    assert "404" in str(info.value)
    assert panda_server.panda.requests["task/get_status"] == before + 1


def _named(panda_server, name):
    return [t.task_id for t in panda_server.sim.tasks.values() if t.name == name]


@pytest.mark.parametrize("unrepeatable", [{"uniqueTaskName": False}, {"taskType": "prod"}])
def test_a_submission_the_server_would_not_recognise_is_sent_once_and_looked_up(prod_hook, panda_server,
                                                                               unrepeatable):
    """No duplicate check on the server (no uniqueTaskName, or a production-role task of another
    type): a lost answer is never resent; the task is found by name among the new tasks."""
    first = task_params("once", **unrepeatable)
    old = prod_hook.submit_task(first)
    wait_status(prod_hook, old, {"done"})
    params = task_params("once", **unrepeatable, taskName=first["taskName"], nEvents=20)
    sent = panda_server.panda.requests["task/submit"]
    panda_server.panda.faults.append("after:503@task/submit")
    task_id = prod_hook.submit_task(params)
    assert panda_server.panda.requests["task/submit"] == sent + 1  # sent once
    assert sorted(_named(panda_server, params["taskName"])) == [old, task_id]  # the new one, not the old one


def test_a_lost_unrepeatable_submission_whose_task_is_not_visible_is_an_unknown_outcome(prod_hook, panda_server):
    from airflow_provider_panda.exceptions import PandaSubmissionUnknownError

    params = task_params("unknown", taskType="prod")
    panda_server.sim.clock.freeze(True)  # only DEFT has it: no lookup can find it yet
    prod_hook.lost_submission_wait = 0.5
    panda_server.panda.faults.append("after:503@task/submit")
    with pytest.raises(PandaSubmissionUnknownError, match="not resent") as info:
        prod_hook.submit_task(params)
    assert params["taskName"] in str(info.value) and info.value.task_name == params["taskName"]
    assert len(_named(panda_server, params["taskName"])) == 1  # created once, never resent


def test_lost_answer_to_unique_submission_reattaches(hook, panda_server):
    params = task_params("lost")
    panda_server.panda.faults.append("after:503@task/submit")
    task_id = hook.submit_task(params)
    same_name = [t.task_id for t in panda_server.sim.tasks.values() if t.name == params["taskName"]]
    assert same_name == [task_id]


def test_timeout_after_acting_reattaches(conn_env, panda_server):
    # a timeout the lookups that follow meet on a busy machine too; the submit's answer comes later still
    hook = PandaHook(conn_env("panda_fast", timeout=2.0))
    params = task_params("slow")
    panda_server.panda.faults.append("slow:5.0@task/submit")
    sent = panda_server.panda.requests["task/submit"]
    task_id = hook.submit_task(params)
    assert [t.task_id for t in panda_server.sim.tasks.values() if t.name == params["taskName"]] == [task_id]
    # PanDA listed the task before the resend: it was found, not resent (a resend of a finished
    # task's name would have re-executed it)
    assert panda_server.panda.requests["task/submit"] == sent + 1
    assert panda_server.sim.tasks[task_id].attempt == 0


def test_unreachable_server_is_a_transport_error(monkeypatch):
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DOWN",
                       f'{{"conn_type": "panda", "host": "http://127.0.0.1:{port}", "extra": {{"max_retries": 0}}}}')
    with pytest.raises(PandaTransportError):
        PandaHook("panda_down").hello()


def test_https_with_the_connections_ca_even_when_requests_ca_bundle_is_set(monkeypatch, tmp_path):
    """Grid machines often set REQUESTS_CA_BUNDLE; the connection's ca_path must still be used."""
    import json

    from airflow_provider_panda.testing.server import LocalPandaServer

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    with LocalPandaServer(tls=True, step=0.05) as server:
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_TLS", json.dumps(server.connection()))
        hook = PandaHook("panda_tls")
        assert hook.config.base_url.startswith("https://")
        assert hook.get_job_ids(1) == []
        conn = server.connection()
        conn["extra"].pop("ca_path")
        conn["extra"]["max_retries"] = 0
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_TLS_NOCA", json.dumps(conn))
        with pytest.raises(PandaTransportError, match="CERTIFICATE_VERIFY_FAILED"):
            PandaHook("panda_tls_noca").get_job_ids(1)


def test_a_new_task_with_id_3_is_not_taken_for_a_reexecution(monkeypatch, capsys):
    """On success ``data`` is the new task's id: id 3 must not read as submission code 3."""
    import itertools
    import json

    from airflow_provider_panda.testing.server import LocalPandaServer

    with LocalPandaServer(step=0.05) as server:
        server.sim._task_ids = itertools.count(3)
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_THREE", json.dumps(server.connection()))
        capsys.readouterr()
        assert PandaHook("panda_three").submit_task(task_params("three")) == 3
        out = "".join(capsys.readouterr())
    assert "Submitted PanDA task" in out and "re-executes" not in out


def test_a_missing_connection_says_how_to_define_one():
    """Airflow's "conn_id isn't defined", of the same type, with what to do about it (sync and async)."""
    import asyncio

    from airflow_provider_panda.hooks.panda import AsyncPandaClient

    with pytest.raises(Exception, match="AIRFLOW_CONN_PANDA_NOWHERE") as missing:
        PandaHook("panda_nowhere").get_task_status(1)
    assert type(missing.value).__name__ == "AirflowNotFoundException"
    assert "add a connection of type PanDA named 'panda_nowhere'" in str(missing.value)
    with pytest.raises(Exception, match="AIRFLOW_CONN_PANDA_NOWHERE") as missing:
        asyncio.run(AsyncPandaClient.for_connection("panda_nowhere", None))
    assert type(missing.value).__name__ == "AirflowNotFoundException"
