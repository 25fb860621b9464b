"""OIDC id tokens that outlive their lifetime: refreshed the way panda-client does it.

When the id token in use expires within a few minutes and a refresh token is at hand (extra
``refresh_token``, or a token file holding the IdP's JSON response), the client settings come from
``<server>/auth/<vo>_auth_config.json``, the token endpoint from the discovery document it names,
and a ``grant_type=refresh_token`` POST returns a new id token. Refreshed tokens are kept in this
process (never written anywhere) and masked in logs.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from airflow_provider_panda import api
from airflow_provider_panda.exceptions import PandaAuthError

#: Refresh a token that expires within this many seconds (panda-client uses minutes too).
REFRESH_MARGIN = 300.0
_LOCK = threading.Lock()
_REFRESHED: dict[str, str] = {}  # refresh token -> the newest id token it gave


def claims(token: str) -> dict[str, Any]:
    """The JWT payload, base64url-decoded without a signature check; {} if it is not a JWT."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (IndexError, ValueError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def expires_soon(token: str, margin: float = REFRESH_MARGIN) -> bool:
    exp = claims(token).get("exp")
    return isinstance(exp, (int, float)) and exp - time.time() < margin


def fresh_token(token: str, refresh_token: str | None, base_url: str, vo: str, verify: Any, timeout: float) -> str:
    """``token`` if it is good for a while yet, else the newest refreshed one (refreshing if needed)."""
    if not refresh_token or not expires_soon(token):
        return token
    with _LOCK:
        newer = _REFRESHED.get(refresh_token)
        if newer and not expires_soon(newer):
            return newer
        newer = _refresh(refresh_token, base_url, vo, verify, timeout)
        _REFRESHED[refresh_token] = newer
        return newer


def _refresh(refresh_token: str, base_url: str, vo: str, verify: Any, timeout: float) -> str:
    import requests

    from airflow_provider_panda.config import _mask

    vo_name = vo.replace(".", ":").split(":")[0]
    try:
        settings = requests.get(base_url + api.auth_config_path(vo_name), timeout=timeout, verify=verify)
        settings.raise_for_status()
        config = settings.json()
        discovery = requests.get(config["oidc_config_url"], timeout=timeout, verify=verify)
        discovery.raise_for_status()
        answer = requests.post(discovery.json()["token_endpoint"], timeout=timeout, verify=verify, data={
            "grant_type": "refresh_token", "client_id": config["client_id"],
            "client_secret": config.get("client_secret", ""), "refresh_token": refresh_token})
        answer.raise_for_status()
        token = answer.json()["id_token"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        # the texts of these errors name URLs, never the tokens (they travel in bodies)
        raise PandaAuthError(401, f"the id token expired and refreshing it failed: {type(exc).__name__}") from None
    _mask(token)
    return token
