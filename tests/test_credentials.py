"""Credentials and TLS in both paths (sync hook, async client of the triggerer) against a local
server over https that asks for client certificates, as the real server does for grid proxies."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess

import pytest
from conftest import params_with_outcomes, task_params

from airflow_provider_panda.exceptions import PandaCertificateError
from airflow_provider_panda.hooks.panda import AsyncPandaClient, PandaHook
from airflow_provider_panda.testing.server import LocalPandaServer
from airflow_provider_panda.transport import is_transient
from airflow_provider_panda.triggers.wait import PandaTaskTrigger

LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def tls_server():
    with LocalPandaServer(step=0.05, client_certs=True) as server:
        yield server


def install(monkeypatch, conn_id: str, server: LocalPandaServer, **extra) -> str:
    conn = {"conn_type": "panda", "host": server.url,
            "extra": {"vo": "atlas", "retry_wait": 0.01, "max_retries": 0, **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def sync_call(conn_id: str):
    return PandaHook(conn_id).get_job_ids(1)


def async_call(conn_id: str):
    async def go():
        client = await AsyncPandaClient.for_connection(conn_id, LOG)
        try:
            return await client.get_job_ids(1)
        finally:
            await client.aclose()

    return asyncio.run(go())


PATHS = {"sync": sync_call, "async": async_call}


@pytest.mark.parametrize("path", PATHS)
def test_the_x509_proxy_is_presented_in_the_handshake(tls_server, monkeypatch, tmp_path, path):
    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user")
    conn_id = install(monkeypatch, "panda_x509", tls_server, ca_path=tls_server.tls[0], x509_proxy=proxy)
    names = len(tls_server.panda.client_cert_names)
    assert PATHS[path](conn_id) == []  # a secure call: refused without an identity
    assert tls_server.panda.client_cert_names[names:] == ["alice analyst"]


def test_x509_user_proxy_is_the_default_proxy(tls_server, monkeypatch, tmp_path):
    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "other")
    monkeypatch.setenv("X509_USER_PROXY", proxy)
    conn_id = install(monkeypatch, "panda_envproxy", tls_server, ca_path=tls_server.tls[0])
    assert PandaHook(conn_id).config.auth == "x509"
    names = len(tls_server.panda.client_cert_names)
    assert sync_call(conn_id) == [] and async_call(conn_id) == []
    assert tls_server.panda.client_cert_names[names:] == ["bob other", "bob other"]


def test_a_renewed_proxy_is_used_by_the_next_request(tls_server, monkeypatch, tmp_path):
    """The same hook and the same async client (a long-lived poller) each see the replaced file."""
    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user")
    conn_id = install(monkeypatch, "panda_renew", tls_server, ca_path=tls_server.tls[0], x509_proxy=proxy)
    hook = PandaHook(conn_id)
    names = tls_server.panda.client_cert_names

    async def scenario():
        client = await AsyncPandaClient.for_connection(conn_id, LOG)
        try:
            start = len(names)
            await client.get_job_ids(1)
            hook.get_job_ids(1)
            tls_server.x509_proxy(proxy, "other")  # renewed (here: another identity, to tell them apart)
            await client.get_job_ids(1)
            hook.get_job_ids(1)
            return names[start:]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == ["alice analyst", "alice analyst", "bob other", "bob other"]


def _key_lines(proxy: str) -> list[str]:
    text = open(proxy).read()
    from conftest import PEM_KEY_BEGIN

    return text[text.index(PEM_KEY_BEGIN):].splitlines()[1:-1]


@pytest.mark.parametrize("path", PATHS)
def test_each_version_of_the_proxy_has_its_key_redacted(tls_server, monkeypatch, tmp_path, path):
    """The proxy's key is registered with the redaction (and Airflow's masker) by the first request
    that uses it, in both paths; a renewed proxy's new key by the first request after the renewal."""
    from airflow_provider_panda import masking

    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user")
    conn_id = install(monkeypatch, "panda_keyed", tls_server, ca_path=tls_server.tls[0], x509_proxy=proxy)
    first = _key_lines(proxy)
    assert not any(masking.known(line) for line in first)
    PATHS[path](conn_id)
    assert all(masking.known(line) for line in first if len(line) >= masking.MIN_LENGTH)
    tls_server.x509_proxy(proxy, "other")  # renewed: a new key
    renewed = _key_lines(proxy)
    assert renewed != first and not any(masking.known(line) for line in renewed)
    PATHS[path](conn_id)
    assert all(masking.known(line) for line in renewed if len(line) >= masking.MIN_LENGTH)
    assert masking.redact("\n".join(renewed + first)).split() == ["***"] * len(renewed + first)

@pytest.mark.parametrize("path", PATHS)
def test_an_expired_proxy_fails_naming_the_file_and_its_expiry(tls_server, monkeypatch, tmp_path, path):
    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user", lifetime=-60)
    conn_id = install(monkeypatch, "panda_expired", tls_server, ca_path=tls_server.tls[0], x509_proxy=proxy,
                      max_retries=3)
    before = sum(tls_server.panda.requests.values())
    with pytest.raises(PandaCertificateError, match=f"x509 proxy {proxy} expired at .* UTC") as info:
        PATHS[path](conn_id)
    assert not is_transient(info.value) and sum(tls_server.panda.requests.values()) == before


@pytest.mark.parametrize("path", PATHS)
def test_an_untrusted_server_certificate_is_not_retried(tls_server, monkeypatch, tmp_path, path):
    """No ca_path, no X509_CERT_DIR: the self-signed server is refused, once, with a message naming the store."""
    from airflow_provider_panda import tls

    monkeypatch.delenv("X509_CERT_DIR", raising=False)
    monkeypatch.setattr(tls, "GRID_CA_DIR", str(tmp_path / "no-such-dir"))
    conn_id = install(monkeypatch, "panda_untrusted", tls_server, max_retries=3,
                      token=tls_server.token("user"))
    attempts = []
    original = tls.certificate_error
    monkeypatch.setattr(tls, "certificate_error", lambda exc, cfg: attempts.append(1) or original(exc, cfg))
    with pytest.raises(PandaCertificateError, match="CERTIFICATE_VERIFY_FAILED.*the system CA store") as info:
        PATHS[path](conn_id)
    assert not is_transient(info.value) and len(attempts) == 1


def _hashed_ca_dir(folder, cert_path: str) -> str:
    """A CA directory as X509_CERT_DIR holds them: certificates named by their subject hash."""
    digest = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", cert_path], check=True,
                            capture_output=True, text=True).stdout.strip()
    folder.mkdir()
    (folder / f"{digest}.0").write_bytes(open(cert_path, "rb").read())
    return str(folder)


def test_x509_cert_dir_is_the_trust_store_of_both_paths(tls_server, monkeypatch, tmp_path):
    conn_id = install(monkeypatch, "panda_certdir", tls_server, token=tls_server.token("user"))
    monkeypatch.setenv("X509_CERT_DIR", _hashed_ca_dir(tmp_path / "certificates", tls_server.tls[0]))
    assert sync_call(conn_id) == [] and async_call(conn_id) == []
    monkeypatch.setenv("X509_CERT_DIR", _hashed_ca_dir(tmp_path / "other", str(tls_server.client_ca[0])))
    for path in PATHS.values():  # a directory without the server's CA: both paths refuse the server
        with pytest.raises(PandaCertificateError, match="other"):
            path(conn_id)


def test_the_trust_store_order(monkeypatch, tmp_path):
    from airflow_provider_panda import tls

    grid = tmp_path / "grid"
    monkeypatch.setattr(tls, "GRID_CA_DIR", str(grid))
    monkeypatch.delenv("X509_CERT_DIR", raising=False)
    assert tls.trust_store(True) is None  # the system store
    grid.mkdir()
    assert tls.trust_store(True) == str(grid)
    monkeypatch.setenv("X509_CERT_DIR", "/env/dir")
    assert tls.trust_store(True) == "/env/dir"
    assert tls.trust_store("/ca/path") == "/ca/path"
    assert tls.trust_store(False) is False


@pytest.mark.parametrize("path", PATHS)
def test_verify_false_trusts_any_server(tls_server, monkeypatch, path):
    conn_id = install(monkeypatch, "panda_noverify", tls_server, verify=False, token=tls_server.token("user"))
    assert PATHS[path](conn_id) == []


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_a_trigger_over_https(tls_server, monkeypatch, shared):
    conn_id = install(monkeypatch, "panda_https", tls_server, ca_path=tls_server.tls[0],
                      token=tls_server.token("user"))
    hook = PandaHook(conn_id)
    task_id = hook.submit_task(task_params("https"))

    async def first():
        async for event in PandaTaskTrigger(task_id, conn_id, poll_interval=0.05, shared_poller=shared).run():
            return event.payload

    event = asyncio.run(asyncio.wait_for(first(), 60))
    assert (event["status"], event["task_status"]) == ("success", "done")


def test_a_trigger_with_an_x509_proxy(tls_server, monkeypatch, tmp_path):
    proxy = tls_server.x509_proxy(str(tmp_path / "proxy"), "user")
    conn_id = install(monkeypatch, "panda_x509wait", tls_server, ca_path=tls_server.tls[0], x509_proxy=proxy)
    task_id = PandaHook(conn_id).submit_task(params_with_outcomes(tls_server, ["done"], "x509wait"))

    async def first():
        async for event in PandaTaskTrigger(task_id, conn_id, poll_interval=0.05).run():
            return event.payload

    names = len(tls_server.panda.client_cert_names)
    assert asyncio.run(asyncio.wait_for(first(), 60))["task_status"] == "done"
    assert set(tls_server.panda.client_cert_names[names:]) == {"alice analyst"}
