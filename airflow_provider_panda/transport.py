"""From a :class:`~airflow_provider_panda.calls.Call` to HTTP and back, for requests and httpx alike.

Request building, answer parsing and the retry policy live here once; the hook (sync) and the async
client only move bytes. Every text taken from an answer or a transport error into an exception or a
log line goes through :func:`.masking.redact` (the credentials themselves are known there).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

from airflow_provider_panda import api, masking
from airflow_provider_panda.calls import Call
from airflow_provider_panda.config import PandaConnectionConfig
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaCertificateError,
    PandaConnectionConfigError,
    PandaHTTPError,
    PandaNotEnvelopeError,
    PandaServerError,
    PandaTransportError,
)

MAX_ERROR_TEXT = 500
#: Texts are redacted before they are cut (a cut through a token would leave a part of it unredacted):
#: this much of an answer is read past the cut, more than any token or key is long.
REDACT_WINDOW = 64 * 1024
USER_AGENT = "airflow-provider-panda"


def prepare(call: Call, cfg: PandaConnectionConfig, client: str = "requests",
            token: str | None = None) -> dict[str, Any]:
    """Method, URL, headers and body of a call; raises on unusable credentials before sending.
    ``token``: the id token if the caller already read it (async callers read it in a thread)."""
    endpoint = call.endpoint
    base = cfg.upload_base_url if call.cache else cfg.base_url
    headers = {"Accept": "application/json", "User-Agent": f"{USER_AGENT} ({client})"}
    request: dict[str, Any] = {"method": endpoint.method, "url": base + endpoint.path, "headers": headers}
    if endpoint.secure:
        if cfg.auth == "none":
            raise PandaConnectionConfigError(
                "the connection has no credentials: set the password to an OIDC id token "
                "(with extra 'vo'), or extra 'token_file', or extra 'x509_proxy'"
            )
        if cfg.auth == "oidc":
            headers["Authorization"] = f"Bearer {token or cfg.read_token()}"
            headers["Origin"] = cfg.vo
        else:
            cfg.check_proxy()  # readable and not expired; the SSL context presents it (see tls.py)
    if call.files:
        request["files"] = call.files
    elif endpoint.method == "GET":
        request["params"] = {k: v for k, v in call.payload.items() if v is not None}
    else:
        headers["Content-Type"] = "application/json"
        request["content"] = json.dumps(call.payload).encode()
    return request


def parse(status_code: int, content: bytes, cfg: PandaConnectionConfig | None = None) -> dict[str, Any]:
    """The envelope of a 200 answer; typed errors for everything else. Any text taken from the
    answer into an error (the body of an error, the envelope's message) is redacted: a server or
    proxy may quote the request's Authorization header back. ``cfg`` is not needed any more (the
    credentials are known in :mod:`.masking`), kept for callers."""
    if status_code != 200:
        text = _excerpt(content, MAX_ERROR_TEXT).strip()
        if status_code == 403:
            if "expired" in text.lower() and "token" in text.lower():
                text += (" (the id token expired: paste a fresh one into the connection, or set its refresh "
                         "token or token file so the hook renews it)")
            raise PandaAuthError(status_code, text)
        if status_code == 429 or status_code >= 500:
            raise PandaServerError(status_code, text)
        raise PandaHTTPError(status_code, text or "no body")
    try:
        body = json.loads(content, object_hook=api.decode_special)
    except ValueError:  # a proxy's or SSO login page, a cut body
        snippet = _excerpt(content, 120)
        raise PandaNotEnvelopeError(f"the server's answer is not JSON ({len(content)} bytes): {snippet!r}") from None
    if not isinstance(body, dict) or "success" not in body:
        raise PandaNotEnvelopeError(f"the server's answer is not the PanDA envelope: {_excerpt(str(body), 120)!r}")
    if isinstance(body.get("message"), str):  # the text of success: false errors (PandaCallFailed)
        body["message"] = masking.redact(body["message"])
    return body


def _excerpt(content: bytes | str, length: int) -> str:
    """The first ``length`` characters of an answer, redacted before the cut."""
    window = content[:length + REDACT_WINDOW]
    text = window.decode("utf-8", "replace") if isinstance(window, bytes) else window
    return masking.redact(text)[:length]


def no_answer(exc: BaseException, cfg: PandaConnectionConfig) -> PandaTransportError:
    """The typed error for a request that got no HTTP answer: a refused certificate (never retried,
    naming the files to fix) or a transport fault (retried)."""
    from airflow_provider_panda.tls import certificate_error

    refused = certificate_error(exc, cfg)
    if refused is not None:
        return PandaCertificateError(masking.redact(str(refused)))
    return PandaTransportError(masking.redact(f"{type(exc).__name__}: {exc}"))


def is_transient(exc: BaseException) -> bool:
    """Faults worth another try: no answer at all, 5xx and 429, a 200 that is not PanDA's envelope;
    never a 4xx, a refused certificate or a handled call."""
    if isinstance(exc, PandaCertificateError):
        return False
    return isinstance(exc, (PandaTransportError, PandaServerError, PandaNotEnvelopeError))


def backoff(attempt: int, cfg: PandaConnectionConfig) -> float:
    """Exponential backoff with full jitter, capped at 60 s."""
    return min(60.0, cfg.retry_wait * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def retrying_kwargs(cfg: PandaConnectionConfig, log: logging.Logger, what: str) -> dict[str, Any]:
    """tenacity settings shared by the sync and async paths."""
    import tenacity

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("PanDA %s failed (%s); attempt %d of %d", what, masking.redact(str(exc)), state.attempt_number,
                    cfg.max_retries + 1)

    return {
        "retry": tenacity.retry_if_exception(is_transient),
        "stop": tenacity.stop_after_attempt(cfg.max_retries + 1),
        "wait": lambda state: backoff(state.attempt_number, cfg),
        "before_sleep": before_sleep,
        "reraise": True,
    }
