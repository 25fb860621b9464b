"""An Airflow connection of type ``panda`` read into plain, validated settings.

Both the sync hook and the trigger (which only gets a conn_id) build their requests from a
:class:`PandaConnectionConfig`, so a connection is validated the same way everywhere, before
any request is sent.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_panda import masking
from airflow_provider_panda.api import DEFAULT_MONITOR_URL
from airflow_provider_panda.exceptions import PandaConnectionConfigError

AUTH_MODES = ("oidc", "x509", "none")
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 4
DEFAULT_RETRY_WAIT = 1.0


def _base_url(url: str, what: str) -> str:
    """Scheme and host[:port] of a URL, as panda-client keeps them; anything else is refused."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PandaConnectionConfigError(
            f"{what} must be an http(s) URL such as https://pandaserver.cern.ch:25443, got {url!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise PandaConnectionConfigError(f"{what} has a bad port: {url!r}") from exc
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(url: str) -> bool:
    """Whether a URL points at this machine (the only place a token may travel over plain http)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise PandaConnectionConfigError(f"extra {name!r} must be true or false, got {value!r}")


def _as_number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PandaConnectionConfigError(f"extra {name!r} must be a number, got {value!r}") from None
    if not low <= number <= high:
        raise PandaConnectionConfigError(f"extra {name!r} must be between {low} and {high}, got {value!r}")
    return number


@dataclass(frozen=True)
class PandaConnectionConfig:
    """Everything needed to talk to one PanDA server; the token itself is never in the repr."""

    base_url: str
    auth: str = "none"
    vo: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    x509_proxy: str | None = None
    verify: bool | str = True
    cache_url: str | None = None
    monitor_url: str = DEFAULT_MONITOR_URL
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_wait: float = DEFAULT_RETRY_WAIT

    def __post_init__(self) -> None:
        # however the settings were built: every credential they hold is known to the redaction
        masking.mask(self.token)
        masking.mask(self.refresh_token)
        if self.auth not in AUTH_MODES:
            raise PandaConnectionConfigError(f"extra 'auth' must be one of {AUTH_MODES}, got {self.auth!r}")
        if self.auth == "oidc":
            if not self.token and not self.token_file:
                raise PandaConnectionConfigError(
                    "auth is oidc but the connection has no token: set the password to an id token "
                    "or extra 'token_file' to a file holding one"
                )
            if not self.vo:
                raise PandaConnectionConfigError("auth is oidc but extra 'vo' is not set (sent as Origin)")
            for url in (self.base_url, self.cache_url or self.base_url):
                if url.startswith("http://") and not is_loopback(url):
                    raise PandaConnectionConfigError(
                        f"refusing to send a bearer token over plain http to {url}: use https"
                    )
        if self.auth == "x509" and not self.x509_proxy:
            raise PandaConnectionConfigError("auth is x509 but extra 'x509_proxy' is not set")

    @property
    def upload_base_url(self) -> str:
        return self.cache_url or self.base_url

    @property
    def may_block(self) -> bool:
        """Whether reading the token may touch files or the network (async callers use a thread)."""
        return bool(self.token_file or self.refresh_token)

    def read_token(self) -> str | None:
        """The id token to send: the password or the token file (read afresh now), refreshed first
        when it expires within minutes and a refresh token is at hand (see :mod:`.auth`)."""
        from airflow_provider_panda.auth import fresh_token

        token, refresh = self.token, self.refresh_token
        if not token and self.token_file:
            token, from_file = self._read_token_file()
            refresh = refresh or from_file
        if not token:
            return None
        from airflow_provider_panda.tls import requests_session

        return fresh_token(token, refresh, self.base_url, self.vo or "", self.verify, self.timeout,
                           session=lambda: requests_session(self))

    def _read_token_file(self) -> tuple[str, str | None]:
        try:
            with open(self.token_file, encoding="utf-8") as handle:  # type: ignore[arg-type]
                text = handle.read().strip()
        except OSError as exc:
            raise PandaConnectionConfigError(
                f"cannot read token_file {self.token_file!r}: {exc.strerror}"
            ) from None
        for secret in token_file_secrets(text):  # on every read: the file may have changed
            masking.mask(secret)
        token, refresh = tokens_from_text(text)
        if not token:
            raise PandaConnectionConfigError(f"token_file {self.token_file!r} holds no token")
        return token, refresh

    def check_proxy(self) -> str:
        """The proxy path, after checking it can be read and has not expired (its content is never logged)."""
        from airflow_provider_panda.tls import check_proxy

        path = self.x509_proxy or ""
        check_proxy(path)
        return path


def tokens_from_text(text: str) -> tuple[str | None, str | None]:
    """A token file holds a raw id token, or the IdP's JSON token response (``id_token`` and
    maybe ``refresh_token``): (id token, refresh token)."""
    text = text.strip()
    if text.startswith("{"):
        data = _json_object(text)
        token, refresh = data.get("id_token"), data.get("refresh_token")
        return (token if isinstance(token, str) and token else None,
                refresh if isinstance(refresh, str) and refresh else None)
    return text or None, None


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def token_file_secrets(text: str) -> list[str]:
    """Every credential a token file holds: the raw token, or each ``*_token`` of the IdP's JSON
    answer (``id_token``, ``refresh_token``, and ``access_token``, which the hook does not send
    but the file holds all the same)."""
    text = text.strip()
    if not text.startswith("{"):
        return [text] if text else []
    return [value for key, value in _json_object(text).items()
            if isinstance(key, str) and key.endswith("token") and isinstance(value, str) and value]


def _set_extras(extra: dict[str, Any]) -> dict[str, Any]:
    """The extras that are set: Airflow's connection form stores every field left untouched as
    null and an emptied one as "", and both mean "use the default"."""
    return {
        key: value.strip() if isinstance(value, str) else value
        for key, value in extra.items()
        if value is not None and not (isinstance(value, str) and not value.strip())
    }


def config_from_connection(conn: Any) -> PandaConnectionConfig:
    """Build settings from an Airflow Connection (host, password, extras); raise on bad input."""
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        raise PandaConnectionConfigError(
            f"connection {getattr(conn, 'conn_id', '?')!r} has no host: set it to the server URL, "
            "e.g. https://pandaserver.cern.ch:25443"
        )
    if "://" not in host:
        scheme = getattr(conn, "schema", None) or "https"
        port = getattr(conn, "port", None)
        host = f"{scheme}://{host}" + (f":{port}" if port else "")
    base_url = _base_url(host, "host")
    raw = getattr(conn, "extra_dejson", None) or {}
    if not isinstance(raw, dict):
        raise PandaConnectionConfigError("connection extra must be a JSON object")
    extra = _set_extras(raw)
    token = getattr(conn, "password", None) or extra.get("token") or None
    token_file = extra.get("token_file") or None
    refresh_token = extra.get("refresh_token") or None
    # panda-client's defaults: X509_USER_PROXY, then /tmp/x509up_u<uid> when x509 is asked for
    x509_proxy = extra.get("x509_proxy") or os.environ.get("X509_USER_PROXY") or None
    auth = extra.get("auth") or ("oidc" if token or token_file else "x509" if x509_proxy else "none")
    if auth == "x509" and not x509_proxy:
        x509_proxy = f"/tmp/x509up_u{os.getuid()}"
    verify: bool | str = True
    if "verify" in extra:
        verify = _as_bool(extra["verify"], "verify")
    if extra.get("ca_path"):
        verify = str(extra["ca_path"])
    cache_url = _base_url(extra["cache_url"], "extra 'cache_url'") if extra.get("cache_url") else None
    monitor_url = extra.get("monitor_url") or DEFAULT_MONITOR_URL
    _base_url(monitor_url, "extra 'monitor_url'")
    return PandaConnectionConfig(
        base_url=base_url,
        auth=str(auth),
        vo=extra.get("vo"),
        token=token,
        token_file=token_file,
        refresh_token=refresh_token,
        x509_proxy=x509_proxy,
        verify=verify,
        cache_url=cache_url,
        monitor_url=monitor_url.rstrip("/"),
        timeout=_as_number(extra.get("timeout", DEFAULT_TIMEOUT), "timeout", 0.1, 3600),
        max_retries=int(_as_number(extra.get("max_retries", DEFAULT_MAX_RETRIES), "max_retries", 0, 20)),
        retry_wait=_as_number(extra.get("retry_wait", DEFAULT_RETRY_WAIT), "retry_wait", 0, 300),
    )


def explain_missing_connection(exc: BaseException, conn_id: str) -> BaseException:
    """Airflow's "conn_id isn't defined" (same type), saying how to define a PanDA connection;
    any other error as it is."""
    if type(exc).__name__ != "AirflowNotFoundException":
        return exc
    env = "AIRFLOW_CONN_" + conn_id.upper()
    return type(exc)(f"{exc}: add a connection of type PanDA named {conn_id!r} (Admin > Connections), or "
                     f"set {env} to one in JSON (`make local-server` prints one for the local server)")
