"""OIDC id tokens that outlive their lifetime: refreshed the way panda-client does it.

When the id token in use expires within a few minutes and a refresh token is at hand (extra
``refresh_token``, or a token file holding the IdP's JSON response), the client settings come from
``<server>/auth/<vo>_auth_config.json``, the token endpoint from the discovery document it names,
and a ``grant_type=refresh_token`` POST returns a new id token. Refreshed tokens (and a refresh token
the IdP rotates) are kept in this process (never written anywhere) and registered with
:mod:`.masking` as they arrive: redacted from our texts, masked in logs.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_panda import api, masking
from airflow_provider_panda.exceptions import PandaAuthError, PandaError, PandaServerError, PandaTransportError

#: Refresh a token that expires within this many seconds (panda-client uses minutes too).
REFRESH_MARGIN = 300.0
#: After a failed refresh, the token in hand is used (while valid) for this long before trying again.
RETRY_AFTER = 30.0
_LOCK = threading.Lock()
log = logging.getLogger(__name__)


@dataclass
class _Grant:
    """What one refresh token has given so far: the newest id token and the newest refresh token
    (an IdP may rotate it: the old one then stops working)."""

    id_token: str | None = None
    refresh_token: str | None = None
    retry_at: float = 0.0


_GRANTS: dict[str, _Grant] = {}  # the refresh token first configured -> what it has given


def claims(token: str) -> dict[str, Any]:
    """The JWT payload, base64url-decoded without a signature check; {} if it is not a JWT."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _exp(token: str) -> float | None:
    exp = claims(token).get("exp")
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def expires_soon(token: str, margin: float | None = None) -> bool:
    exp = _exp(token)
    return exp is not None and exp - time.time() < (REFRESH_MARGIN if margin is None else margin)


def fresh_token(token: str, refresh_token: str | None, base_url: str, vo: str, verify: Any, timeout: float,
                session: Any = None) -> str:
    """``token`` if it is good for a while yet, else the newest refreshed one (refreshing if needed).

    A failed refresh never throws away a token that is still valid: it is used, and the refresh is
    tried again RETRY_AFTER seconds later. Once no valid token is left, an IdP that cannot be reached
    or answers 5xx is a transient fault (retried); an IdP that refuses the grant is an auth error.
    """
    if not refresh_token or not expires_soon(token):
        return token
    with _LOCK:
        grant = _GRANTS.setdefault(refresh_token, _Grant())
        best = grant.id_token if grant.id_token and (_exp(grant.id_token) or 0) > (_exp(token) or 0) else token
        if not expires_soon(best):
            return best
        if time.monotonic() < grant.retry_at and not expires_soon(best, 0):
            return best
        try:
            grant.id_token, rotated = _refresh(grant.refresh_token or refresh_token, base_url, vo, verify, timeout,
                                               session)
        except PandaError as exc:
            if not expires_soon(best, 0):
                grant.retry_at = time.monotonic() + RETRY_AFTER
                log.warning("PanDA id token refresh failed (%s); the current token is valid until %s, kept",
                            masking.redact(str(exc)), time.strftime("%H:%M:%S", time.gmtime(_exp(best) or 0)))
                return best
            raise
        grant.retry_at = 0.0
        if rotated and rotated != (grant.refresh_token or refresh_token):
            grant.refresh_token = rotated  # registered with the redaction when it arrived (_refresh)
        return grant.id_token


def _refresh(refresh_token: str, base_url: str, vo: str, verify: Any, timeout: float,
             session: Any = None) -> tuple[str, str | None]:
    """One refresh grant: (new id token, the refresh token the IdP sent back, if any)."""
    import requests

    http = session() if session is not None else requests  # a factory: sessions are made only to refresh
    vo_name = vo.replace(".", ":").split(":")[0]
    step = "auth config"
    try:
        settings = http.get(base_url + api.auth_config_path(vo_name), timeout=timeout, verify=verify)
        _check(settings, step)
        config = settings.json()
        step = "OIDC discovery"
        discovery = http.get(config["oidc_config_url"], timeout=timeout, verify=verify)
        _check(discovery, step)
        step = "token endpoint"
        answer = http.post(discovery.json()["token_endpoint"], timeout=timeout, verify=verify, data={
            "grant_type": "refresh_token", "client_id": config["client_id"],
            "client_secret": config.get("client_secret", ""), "refresh_token": refresh_token})
        _check(answer, step)
        body = answer.json()
        if not isinstance(body, dict):
            raise TypeError("the answer is not a JSON object")
        for key in ("id_token", "refresh_token", "access_token"):  # every credential of the answer,
            masking.mask(body.get(key))  # before anything can quote one (non-strings are ignored)
        token = body["id_token"]
        if not isinstance(token, str) or not token:
            raise TypeError("id_token is not a string")
        rotated = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
    except requests.RequestException as exc:
        # the texts of these errors name URLs, never the tokens (they travel in bodies)
        raise PandaTransportError(f"the id token expires and the IdP ({step}) could not be reached: "
                                  f"{type(exc).__name__}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PandaAuthError(401, f"the id token expired and refreshing it failed: the {step} answer is "
                                  f"unusable ({type(exc).__name__})") from None
    return token, rotated


#: How much of an IdP's error answer an error quotes.
MAX_IDP_TEXT = 200


def _idp_said(response: Any) -> str:
    """What an IdP's error answer says (OAuth's ``error: error_description``, else its text), redacted
    before it is cut: an IdP may quote the grant, and so the refresh token, back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        text = body["error"] + (f": {description}" if isinstance(description, str) and description else "")
    else:
        text = response.text if isinstance(response.text, str) else ""
    text = masking.redact(" ".join(text.split()))
    return f" ({text[:MAX_IDP_TEXT]})" if text else ""


def _check(response: Any, step: str) -> None:
    """5xx and 429 from the IdP are transient; any other non-200 refuses the refresh."""
    if response.status_code == 429 or response.status_code >= 500:
        raise PandaServerError(response.status_code, f"the IdP ({step}) failed; the id token could not be "
                                                     f"refreshed{_idp_said(response)}")
    if response.status_code != 200:
        raise PandaAuthError(response.status_code, f"the id token expired and refreshing it failed: "
                                                   f"the {step} answered HTTP {response.status_code}"
                                                   f"{_idp_said(response)}")
