"""No secret reaches a log, an exception text, an XCom, a rendered template field or a repr.

Representative flows run with a recognisable token, refresh token and proxy, including a server
that quotes the Authorization header back in its error; then everything is scanned: 0 hits."""

from __future__ import annotations

import json

import pytest
from airflow_runs import run_dag
from conftest import params_with_outcomes, task_params

from airflow_provider_panda.exceptions import PandaError
from airflow_provider_panda.hooks.panda import PandaHook
from airflow_provider_panda.triggers.task import PandaTaskTrigger

PROXY_MARK = "PROXY-PRIVATE-KEY-MATERIAL-7f3a"


def scan_flows(panda_server, monkeypatch, tmp_path, capfd, tag: str) -> dict[str, int]:
    """Run representative flows with recognisable secrets and count them in everything produced."""
    import asyncio

    conn = panda_server.connection(retry_wait=0.01, max_retries=1)
    token = conn["password"]
    refresh = panda_server.refresh_token("user")
    conn["extra"]["refresh_token"] = refresh
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(conn))
    proxy = tmp_path / f"x509up_{tag}"
    proxy.write_text(f"-----BEGIN CERTIFICATE-----\n{PROXY_MARK}\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_PROXY", json.dumps(
        {"conn_type": "panda", "host": panda_server.url, "extra": {"x509_proxy": str(proxy), "max_retries": 0}}))
    texts: list[str] = []

    hook = PandaHook()
    texts += [repr(hook), repr(hook.config), str(hook.config), repr(hook.test_connection())]
    task_id = hook.submit_task(task_params(f"secret{tag}"))
    for fault in ("echo:403", "echo:500", "echo:502"):  # errors quoting our credentials back
        panda_server.panda.faults.extend([f"{fault}@task/get_status"] * 2)
        with pytest.raises(PandaError) as info:
            hook.get_task_status(task_id)
        assert "rejected" in str(info.value)  # the echoed error really came back
        texts += [str(info.value), repr(info.value)]
    for bad in (lambda: hook.kill_task(999_999_999), lambda: PandaHook("panda_proxy").get_task_status(1)):
        with pytest.raises(PandaError) as info:
            bad()
        texts += [str(info.value), repr(info.value)]
    trigger = PandaTaskTrigger(task_id, poll_interval=0.05)
    texts.append(repr(trigger.serialize()))

    async def consume():
        async for event in trigger.run():
            return event

    texts.append(repr(asyncio.run(consume())))
    ok = run_dag("SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.05, deferrable=True)",
                 params=repr(task_params(f"secretok{tag}")))
    bad = run_dag("SubmitTaskOperator(task_id='submit', task_params=$params, poll_interval=0.05)",
                  params=repr(params_with_outcomes(panda_server, ["failed"], f"secretbad{tag}")))
    assert ok.states == {"submit": "success"} and bad.states == {"submit": "failed"}
    texts += stored_for([ok, bad])
    out, err = capfd.readouterr()
    texts += [out, err]
    everything = "\n".join(texts)
    hits = {name: everything.count(secret) for name, secret in
            (("token", token), ("refresh token", refresh), ("proxy", PROXY_MARK))}
    print(f"secrets scan ({tag}): {len(everything)} characters in {len(texts)} texts, hits {hits}")
    return hits


def test_no_secret_anywhere(panda_server, monkeypatch, tmp_path, capfd):
    """Logs (stdout/stderr of in-process runs), exception texts, XComs, rendered fields, reprs and
    trigger events. Task log *files* are scanned in test_real_airflow.py, where a real worker writes them."""
    assert scan_flows(panda_server, monkeypatch, tmp_path, capfd, "on") == {"token": 0, "refresh token": 0,
                                                                             "proxy": 0}


def test_the_scan_finds_secrets_when_redaction_is_off(panda_server, monkeypatch, tmp_path, capfd):
    """The negative control: the same scan with our redaction and Airflow's masking turned off
    must find the secrets, or the test above proves nothing."""
    from airflow_provider_panda import masking, transport

    monkeypatch.setattr(transport, "redact", lambda text, cfg: text)
    monkeypatch.setattr(masking, "mask", lambda secret: None)
    hits = scan_flows(panda_server, monkeypatch, tmp_path, capfd, "off")
    assert hits["token"] > 0, hits


def stored_for(runs) -> list[str]:
    """XComs and rendered template fields Airflow stored for these runs."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    found = []
    with create_session() as session:
        for run in runs:
            for row in session.query(XComModel).filter_by(dag_id=run.dag_id):
                found.append(json.dumps(XComModel.deserialize_value(row), default=str))
            for row in session.query(RenderedTaskInstanceFields).filter_by(dag_id=run.dag_id):
                found.append(json.dumps(row.rendered_fields, default=str))
    assert found
    return found
