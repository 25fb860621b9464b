"""The pure parts of :mod:`airflow_provider_panda.transport`: what is worth another try, how a request
is built from a Call and a connection, how an answer is read, the backoff. No server, no socket."""

from __future__ import annotations

import json
import logging
import ssl
import uuid
from typing import Any

import pytest
import tenacity

from airflow_provider_panda import api, calls, transport
from airflow_provider_panda.config import PandaConnectionConfig
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaCallFailed,
    PandaCertificateError,
    PandaCommandRejected,
    PandaConnectionConfigError,
    PandaError,
    PandaHTTPError,
    PandaInputError,
    PandaNotEnvelopeError,
    PandaNotFoundError,
    PandaResponseError,
    PandaServerError,
    PandaTransportError,
)

SERVER = "https://pandaserver.example:25443"
CACHE = "https://pandacache.example:25443"


def oidc(**kw: Any) -> PandaConnectionConfig:
    """An OIDC connection whose token the caller passes to prepare() (nothing is read or registered)."""
    return PandaConnectionConfig(SERVER, auth="oidc", vo="atlas", token_file="/nonexistent/token", **kw)


def secret() -> str:
    """A credential unique to this test, so registering it changes no other test's texts."""
    return "tok-" + uuid.uuid4().hex


# --- what is worth another try -------------------------------------------------------------------

TRANSIENT = [
    PandaTransportError("ConnectionResetError: reset by peer"),
    PandaServerError(502, "bad gateway"),
    PandaServerError(503, "unavailable"),
    PandaServerError(429, "too many requests"),
    PandaNotEnvelopeError("the server's answer is not JSON"),
]
DEFINITE = [
    PandaCertificateError("TLS certificate refused"),
    PandaAuthError(403, "token expired"),
    PandaHTTPError(404, "no such endpoint"),
    PandaResponseError("expected a dict"),
    PandaCallFailed("database error"),
    PandaNotFoundError("Task not found"),
    PandaCommandRejected(4, "bad status", action="kill"),
    PandaInputError("bad id"),
    PandaError("anything else"),
    ValueError("not ours"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__ + str(getattr(e, "status_code", "")))
def test_no_answer_a_5xx_a_429_and_a_page_that_is_not_pandas_are_worth_another_try(exc):
    assert transport.is_transient(exc)


@pytest.mark.parametrize("exc", DEFINITE, ids=lambda e: type(e).__name__)
def test_a_refused_certificate_a_4xx_and_a_handled_call_are_not_retried(exc):
    assert not transport.is_transient(exc)


def test_a_refused_certificate_is_not_transient_although_it_is_a_transport_error():
    exc = PandaCertificateError("refused")
    assert isinstance(exc, PandaTransportError) and not transport.is_transient(exc)


def test_a_transport_fault_becomes_a_retried_transport_error():
    error = transport.no_answer(ConnectionRefusedError("connection refused"), PandaConnectionConfig(SERVER))
    assert type(error) is PandaTransportError
    assert str(error) == "ConnectionRefusedError: connection refused"
    assert transport.is_transient(error)


def test_a_certificate_refusal_becomes_a_certificate_error_that_is_not_retried():
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed: unable to get local issuer certificate")
    wrapped = ConnectionError("request failed")
    wrapped.__cause__ = refused
    error = transport.no_answer(wrapped, PandaConnectionConfig(SERVER))
    assert type(error) is PandaCertificateError
    assert "certificate verify failed" in str(error)
    assert not transport.is_transient(error)


def test_a_transport_error_text_is_redacted():
    token = secret()
    transport.masking.mask(token)
    error = transport.no_answer(OSError(f"proxy said Bearer {token}"), PandaConnectionConfig(SERVER))
    assert token not in str(error) and "***" in str(error)


# --- retries ------------------------------------------------------------------------------------


def _retrying(cfg: PandaConnectionConfig, log: Any) -> tenacity.Retrying:
    return tenacity.Retrying(sleep=lambda seconds: None, **transport.retrying_kwargs(cfg, log, "task/get_status"))


def test_a_transient_fault_is_retried_max_retries_times_then_raised():
    cfg = PandaConnectionConfig(SERVER, max_retries=2)
    attempts: list[int] = []

    def call():
        attempts.append(1)
        raise PandaServerError(503, "unavailable")

    with pytest.raises(PandaServerError):
        _retrying(cfg, logging.getLogger("unit"))(call)
    assert len(attempts) == 3


def test_a_definite_error_is_not_retried():
    attempts: list[int] = []

    def call():
        attempts.append(1)
        raise PandaNotFoundError("Task not found")

    with pytest.raises(PandaNotFoundError):
        _retrying(PandaConnectionConfig(SERVER, max_retries=4), logging.getLogger("unit"))(call)
    assert len(attempts) == 1


def test_each_retry_is_logged_with_its_attempt_number(caplog):
    answers = iter([PandaTransportError("reset"), "running"])

    def call():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with caplog.at_level(logging.WARNING, logger="unit"):
        assert _retrying(PandaConnectionConfig(SERVER, max_retries=3), logging.getLogger("unit"))(call) == "running"
    assert caplog.messages == ["PanDA task/get_status failed (reset); attempt 1 of 4"]


@pytest.mark.parametrize("attempt, expected", [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)])
def test_the_backoff_doubles_from_retry_wait_up_to_a_minute(monkeypatch, attempt, expected):
    monkeypatch.setattr(transport.random, "uniform", lambda low, high: high)
    assert transport.backoff(attempt, PandaConnectionConfig(SERVER, retry_wait=2.0)) == expected


def test_the_backoff_jitter_is_at_least_half_the_step(monkeypatch):
    monkeypatch.setattr(transport.random, "uniform", lambda low, high: low)
    assert transport.backoff(2, PandaConnectionConfig(SERVER, retry_wait=2.0)) == 2.0


# --- requests -----------------------------------------------------------------------------------


def test_a_read_is_a_get_with_its_payload_as_query_parameters_none_left_out():
    request = transport.prepare(calls.get_task_status(5), oidc(), token="abc")
    assert (request["method"], request["url"]) == ("GET", SERVER + "/api/v1/task/get_status")
    assert request["params"] == {"task_id": 5}
    assert "content" not in request and "files" not in request
    none_left_out = calls.Call(api.TASK_GET_STATUS, {"task_id": 5, "x": None}, lambda e: e)
    assert transport.prepare(none_left_out, oidc(), token="abc")["params"] == {"task_id": 5}


def test_a_command_is_a_post_with_a_json_body():
    request = transport.prepare(calls.finish_task(5, soft=True), oidc(), token="abc")
    assert request["method"] == "POST"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["content"]) == {"task_id": 5, "soft": True}
    assert "params" not in request


def test_an_oidc_request_carries_the_bearer_token_and_the_vo_as_origin():
    headers = transport.prepare(calls.kill_task(5), oidc(), token="the-id-token")["headers"]
    assert headers["Authorization"] == "Bearer the-id-token"
    assert headers["Origin"] == "atlas"
    assert headers["Accept"] == "application/json"


def test_the_user_agent_names_the_http_client():
    assert transport.prepare(calls.hello(), oidc(), client="httpx", token="t")["headers"]["User-Agent"] == \
        f"{transport.USER_AGENT} (httpx)"


def test_a_secure_call_without_credentials_fails_before_sending():
    with pytest.raises(PandaConnectionConfigError, match="no credentials"):
        transport.prepare(calls.get_task_status(5), PandaConnectionConfig(SERVER))


def test_the_alive_check_needs_no_credentials_and_sends_none():
    request = transport.prepare(calls.hello(), PandaConnectionConfig(SERVER))
    assert "Authorization" not in request["headers"]
    assert request["url"] == SERVER + "/api/v1/system/is_alive"


def test_an_x509_request_checks_the_proxy_and_sends_no_bearer(monkeypatch):
    checked: list[str] = []
    monkeypatch.setattr("airflow_provider_panda.tls.check_proxy", checked.append)
    cfg = PandaConnectionConfig(SERVER, auth="x509", x509_proxy="/tmp/x509up_unit")
    headers = transport.prepare(calls.kill_task(5), cfg)["headers"]
    assert checked == ["/tmp/x509up_unit"]
    assert "Authorization" not in headers


def test_an_upload_is_a_multipart_post_to_the_cache_server():
    call = calls.upload_cache_file("sources.x.tar.gz", b"data", use_cache_server=True)
    request = transport.prepare(call, oidc(cache_url=CACHE), token="t")
    assert request["url"] == CACHE + "/api/v1/file_server/upload_cache_file"
    assert request["files"] == call.files
    assert "content" not in request and "Content-Type" not in request["headers"]


def test_a_cache_call_goes_to_the_main_server_when_there_is_no_cache_url():
    call = calls.upload_cache_file("x.tar.gz", b"", use_cache_server=True)
    assert transport.prepare(call, oidc(), token="t")["url"].startswith(SERVER + "/")


# --- answers ------------------------------------------------------------------------------------


def test_a_200_envelope_is_read_with_its_datetimes():
    body = json.dumps({"success": True, "message": "", "data": {"t": {"__datetime__": "2024-05-01T10:00:00"}}})
    envelope = transport.parse(200, body.encode())
    assert envelope["data"]["t"].isoformat() == "2024-05-01T10:00:00"


@pytest.mark.parametrize("content", [b"<html>Sign in</html>", b'{"success": tr', b""])
def test_a_200_that_is_not_json_is_a_not_envelope_error(content):
    with pytest.raises(PandaNotEnvelopeError, match="not JSON"):
        transport.parse(200, content)


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"data": 1}', b'"ok"'])
def test_a_200_json_that_is_not_the_envelope_is_a_not_envelope_error(content):
    with pytest.raises(PandaNotEnvelopeError, match="not the PanDA envelope"):
        transport.parse(200, content)


@pytest.mark.parametrize("code", [429, 500, 502, 503, 504])
def test_a_5xx_or_429_is_a_server_error(code):
    with pytest.raises(PandaServerError) as info:
        transport.parse(code, b"  busy  ")
    assert (info.value.status_code, info.value.text) == (code, "busy")


def test_a_403_is_an_auth_error():
    with pytest.raises(PandaAuthError) as info:
        transport.parse(403, b"Token authentication failed.")
    assert info.value.text == "Token authentication failed."


def test_a_403_for_an_expired_token_says_how_to_renew_it():
    with pytest.raises(PandaAuthError, match="paste a fresh one"):
        transport.parse(403, b"Token has EXPIRED")


@pytest.mark.parametrize("code", [400, 404, 405])
def test_another_non_200_is_an_http_error_that_says_when_there_was_no_body(code):
    with pytest.raises(PandaHTTPError) as info:
        transport.parse(code, b"")
    assert type(info.value) is PandaHTTPError
    assert str(info.value) == f"HTTP {code}: no body"


def test_an_error_body_is_cut_to_the_limit():
    with pytest.raises(PandaServerError) as info:
        transport.parse(500, b"x" * 10_000)
    assert len(info.value.text) == transport.MAX_ERROR_TEXT


def test_an_error_body_quoting_a_token_is_redacted():
    token = secret()
    transport.masking.mask(token)
    with pytest.raises(PandaHTTPError) as info:
        transport.parse(400, f"bad header Authorization: Bearer {token}".encode())
    assert token not in str(info.value) and "***" in str(info.value)


def test_a_token_across_the_cut_is_redacted_before_the_cut():
    token = secret()
    transport.masking.mask(token)
    body = "x" * (transport.MAX_ERROR_TEXT - 10) + token
    with pytest.raises(PandaServerError) as info:
        transport.parse(500, body.encode())
    assert token[:10] not in info.value.text


def test_an_envelope_message_quoting_a_token_is_redacted():
    token = secret()
    transport.masking.mask(token)
    envelope = transport.parse(200, json.dumps({"success": False, "message": f"bad token {token}"}).encode())
    assert envelope["message"] == "bad token ***"


def test_a_not_json_answer_quoting_a_token_is_redacted():
    token = secret()
    transport.masking.mask(token)
    with pytest.raises(PandaNotEnvelopeError) as info:
        transport.parse(200, f"<html>{token}</html>".encode())
    assert token not in str(info.value)
