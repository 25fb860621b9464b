"""The real panda-client 2.2.0 against our local server: it must decode our answers to the values
our hook returns. panda-client is the independent witness that the server (and so the hook) speaks
PanDA's real protocol. ``send_command_to_job`` is not in panda-client (it lives in panda-server's
own client), so it is covered by the hook tests only.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import params_with_outcomes, task_params, wait_status

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaCommandRejected, PandaDuplicateTaskError
from airflow_provider_panda.testing import messages

pytest.importorskip("pandaclient")
WITNESS = Path(__file__).with_name("pandaclient_witness.py")


@pytest.fixture
def client(panda_server, tmp_path):
    """Call pandaclient.Client functions in a subprocess configured for the local server."""

    def call(*calls: tuple, user: str = "user") -> list:
        origin = "atlas:production" if user == "prod" else "atlas"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PANDA", "X509"))}
        env.update({
            "PANDA_URL_SSL": panda_server.url + "/server/panda", "PANDA_URL": panda_server.url + "/server/panda",
            "PANDACACHE_URL": panda_server.url + "/server/panda", "PANDA_BEHIND_REAL_LB": "1",
            "PANDA_AUTH": "oidc", "PANDA_AUTH_VO": origin, "PANDA_AUTH_ID_TOKEN": panda_server.token(user),
            "PANDA_CONFIG_ROOT": str(tmp_path), "PANDA_VERIFY_HOST": "off",
        })
        spec = [[name, list(args), kwargs] for name, args, kwargs in
                ((c[0], c[1] if len(c) > 1 else (), c[2] if len(c) > 2 else {}) for c in calls)]
        out = subprocess.run([sys.executable, str(WITNESS), json.dumps(spec)], env=env, capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    return call


def test_hello(client, hook):
    [(status, message)] = client(("hello",))
    assert status == 0 and message == hook.hello()


def test_insert_task_params_and_duplicate(client, hook, panda_server):
    params = params_with_outcomes(panda_server, ["hang"], "pc")
    [(status, (code, message))] = client(("insertTaskParams", [params], {"properErrorCode": True}))
    assert status == 0 and code == 0
    task_id = api.task_id_in_message(message)
    wait_status(hook, task_id, {"running"})
    [(status, (code, message))] = client(("insertTaskParams", [params], {"properErrorCode": True}))
    with pytest.raises(PandaDuplicateTaskError) as info:
        hook.submit_task(params)
    assert code == info.value.code == 2 and message == info.value.server_message
    assert info.value.task_id == task_id


def test_task_reads(client, hook):
    task_id = hook.submit_task(task_params("pcread"))
    wait_status(hook, task_id, {"done"})
    results = client(("getTaskStatus", [task_id]), ("getTaskParamsMap", [task_id]),
                     ("getPandaIDsWithTaskID", [task_id]), ("getUserJobMetadata", [task_id]),
                     ("getTaskStatus", [999_999_999]))
    assert results[0] == [0, hook.get_task_status(task_id)]
    assert results[1] == [0, hook.get_task_params(task_id)]
    assert results[2] == [0, hook.get_job_ids(task_id)]
    assert results[3] == [0, hook.get_user_job_metadata(task_id)]
    assert results[4] == [255, None]  # panda-client's "not answered"; the hook raises PandaNotFoundError


def test_job_status(client, hook):
    task_id = hook.submit_task(task_params("pcjobs"))
    wait_status(hook, task_id, {"done"})
    job_ids = hook.get_job_ids(task_id)
    ours = hook.get_full_job_status(job_ids + [1])
    [(s1, active), (s2, full)] = client(("getJobStatus", [job_ids]), ("getFullJobStatus", [job_ids + [1]]))
    assert s1 == s2 == 0
    assert [j["jobStatus"] for j in active] == [j["jobStatus"] for j in ours[:-1]]
    expected = [{"PandaID": j["PandaID"], "jobStatus": j["jobStatus"], "jediTaskID": j["jediTaskID"]}
                for j in ours[:-1]]
    assert full[:-1] == expected
    assert full[-1] is None and ours[-1] is None  # an unknown id: null on the wire, None on both sides


def test_kill_finish_and_rejections(client, hook, panda_server):
    running = [hook.submit_task(params_with_outcomes(panda_server, ["hang"], "pck")) for _ in range(2)]
    for task_id in running:
        wait_status(hook, task_id, {"running"})
    [(s1, killed), (s2, finished)] = client(("killTask", [running[0]]), ("finishTask", [running[1]], {"soft": True}))
    assert s1 == s2 == 0 and killed == [True, 0] and finished == [True, 0]
    wait_status(hook, running[0], {"aborted"})
    [(status, rejected)] = client(("killTask", [running[0]]))
    with pytest.raises(PandaCommandRejected) as info:
        hook.kill_task(running[0])
    assert status == 0 and rejected[0] is False and rejected[1] == info.value.server_message


def test_retry(client, hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["failed", "done"], "pcretry"))
    wait_status(hook, task_id, {"failed"})
    [(status, (code, message))] = client(("retryTask", [task_id], {"properErrorCode": True}))
    assert status == 0 and code == 0 and message == messages.command_registered_message("retry", task_id)
    wait_status(hook, task_id, {"done"})
    [(status, (code, message))] = client(("retryTask", [task_id]))
    with pytest.raises(PandaCommandRejected) as info:
        hook.retry_task(task_id)
    assert code == info.value.code == 4 and message == info.value.server_message


def test_resume_and_reactivate(client, hook, prod_hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["done"], "pcres"))
    wait_status(hook, task_id, {"done"})
    [(s1, denied), (s2, reactivated)] = client(("resumeTask", [task_id]), ("reactivateTask", [task_id]), user="user")
    assert denied == [False, api.MESSAGE_PROD_ROLE] and reactivated == [False, api.MESSAGE_PROD_ROLE]
    [(status, reactivated)] = client(("reactivateTask", [task_id]), user="prod")
    assert status == 0 and reactivated == [True, 0]
    wait_status(hook, task_id, {"done"})
    panda_server.sim.force(task_id, status="paused")
    [(status, resumed)] = client(("resumeTask", [task_id]), user="prod")
    assert resumed == [True, 0] and hook.get_task_status(task_id) == "running"


def test_kill_jobs(client, hook, panda_server):
    task_id = hook.submit_task(params_with_outcomes(panda_server, ["hang"], "pckj"))
    wait_status(hook, task_id, {"running"})
    job_ids = hook.get_job_ids(task_id)
    [(status, answers)] = client(("killJobs", [[job_ids[0], 1]]))
    assert status == 0 and answers == [True, False]
    assert hook.kill_jobs([job_ids[0], 1]) == [False, False]  # already cancelled now


def test_file_recovery(client, hook):
    task_id = hook.submit_task(task_params("pcrecov"))
    wait_status(hook, task_id, {"done"})
    [(status, (accepted, data))] = client(("send_file_recovery_request", [task_id], {"dry_run": True}))
    assert status == 0 and accepted is True
    assert data["logFileURL"].rsplit(".", 2)[0] == hook.send_file_recovery_request(task_id, True).rsplit(".", 2)[0]


def test_put_file(client, hook, tmp_path):
    sandbox = tmp_path / "sources.pc.tar.gz"
    sandbox.write_bytes(gzip.compress(b"witness " * 50))
    [(status, message)] = client(("putFile", [str(sandbox)]))
    assert status == 0 and message == "True"
    [(status, message)] = client(("putFile", [str(sandbox)], {"reuseSandbox": True}))
    assert message == f"NewFileName:{hook.put_file(str(sandbox), reuse_sandbox=True)}"


def test_user_name_from_token(client, hook):
    [(_, value)] = client(("get_user_name_from_token",))
    assert tuple(value) == hook.get_user_name_from_token()
