"""TLS for the sync hook and the async client alike: one trust store, and the x509 proxy re-read
when it is replaced on disk.

The server is verified against, in order: extra ``ca_path``; ``X509_CERT_DIR``;
``/etc/grid-security/certificates`` when it exists; else the system store (panda-client's defaults,
then the OS). ``verify: false`` verifies nothing. Both paths get an :class:`ssl.SSLContext` built by
the same function (one object per path: requests/urllib3 and httpx each tune their own), cached by
the settings *and* the proxy file's identity, so a renewed proxy gives a new context and therefore
a new handshake on the next request.
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_panda import masking
from airflow_provider_panda.exceptions import PandaCertificateError, PandaConnectionConfigError

if TYPE_CHECKING:
    from airflow_provider_panda.config import PandaConnectionConfig

GRID_CA_DIR = "/etc/grid-security/certificates"


def trust_store(verify: bool | str) -> str | None | bool:
    """What verifies the server: a CA file or directory, None for the system store, False for nothing."""
    if verify is False:
        return False
    if isinstance(verify, str):
        return verify
    env = os.environ.get("X509_CERT_DIR")
    if env:
        return env
    if os.path.isdir(GRID_CA_DIR):
        return GRID_CA_DIR
    return None


def describe_trust(cfg: PandaConnectionConfig) -> str:
    store = trust_store(cfg.verify)
    return "no verification" if store is False else f"CA store {store}" if store else "the system CA store"


def _file_identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=64)
def _proxy_expiry(path: str, identity: tuple[int, int, int]) -> datetime:
    """The end of validity of the proxy's first certificate (read once per file version). Its key
    material is registered with :mod:`.masking` here, before anything else reads the file: every
    use of the proxy (a request, an SSL context) checks it first."""
    from cryptography import x509

    with open(path, "rb") as handle:
        data = handle.read()
    masking.mask_private_keys(data)
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    end = data.find(b"-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        raise PandaConnectionConfigError(f"x509_proxy {path!r} holds no PEM certificate")
    try:
        cert = x509.load_pem_x509_certificate(data[start:end + len(b"-----END CERTIFICATE-----")])
    except ValueError:
        raise PandaConnectionConfigError(f"x509_proxy {path!r} holds no readable certificate") from None
    return cert.not_valid_after_utc


def check_proxy(path: str) -> tuple[int, int, int]:
    """The proxy file's identity, after checking it is readable and not expired."""
    try:
        identity = _file_identity(path)
    except OSError:
        raise PandaConnectionConfigError(f"x509_proxy {path!r} is not a readable file") from None
    if not os.access(path, os.R_OK):
        raise PandaConnectionConfigError(f"x509_proxy {path!r} is not a readable file")
    expiry = _proxy_expiry(path, identity)
    if expiry.timestamp() <= time.time():
        raise PandaCertificateError(
            f"the x509 proxy {path} expired at {expiry:%Y-%m-%d %H:%M:%S} UTC: renew it (voms-proxy-init)")
    return identity


def proxy_expiry(path: str) -> datetime | None:
    try:
        return _proxy_expiry(path, _file_identity(path))
    except (OSError, PandaConnectionConfigError):
        return None


@functools.lru_cache(maxsize=64)
def _build(store: str | None | bool, proxy: str | None, identity: Any, user: str) -> ssl.SSLContext:
    """Reading a CA store takes tens of ms: once per settings, proxy version and user, not per request."""
    if store is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif store is None:
        ctx = ssl.create_default_context()
    else:
        if not os.path.exists(store):
            raise PandaConnectionConfigError(f"the CA store {store!r} does not exist (ca_path or X509_CERT_DIR)")
        ctx = ssl.create_default_context(**({"capath": store} if os.path.isdir(store) else {"cafile": store}))
    if proxy:
        try:
            ctx.load_cert_chain(proxy, proxy)
        except (ssl.SSLError, OSError) as exc:
            raise PandaConnectionConfigError(
                f"x509_proxy {proxy!r} is not a usable certificate and key: {masking.redact(str(exc))}") from None
    return ctx


def ssl_context(cfg: PandaConnectionConfig, user: str) -> ssl.SSLContext | None:
    """The context for ``user`` ("requests" or "httpx"), or None when no URL of the connection is https."""
    if not any(url.startswith("https://") for url in (cfg.base_url, cfg.cache_url or "")):
        return None
    proxy = cfg.x509_proxy if cfg.auth == "x509" else None
    identity = check_proxy(proxy) if proxy else None
    return _build(trust_store(cfg.verify), proxy, identity, user)


def certificate_error(exc: BaseException, cfg: PandaConnectionConfig | None) -> PandaCertificateError | None:
    """A not-transient error naming what to fix if ``exc`` is a certificate refusal, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    text = ""
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            text = str(current)
            break
        message = str(current)
        if "certificate" in message.lower() or "unknown ca" in message.lower():
            text = message
            break
        current = current.__cause__ or current.__context__ or (current.args[0] if current.args and isinstance(
            current.args[0], BaseException) else None)
    if not text:
        return None
    where = []
    if cfg is not None:
        where.append(f"server verified against {describe_trust(cfg)}")
        if cfg.auth == "x509" and cfg.x509_proxy:
            expiry = proxy_expiry(cfg.x509_proxy)
            where.append(f"x509 proxy {cfg.x509_proxy}" + (f" valid until {expiry:%Y-%m-%d %H:%M:%S} UTC"
                                                          if expiry else ""))
    return PandaCertificateError(f"TLS certificate refused: {text[:300]} ({'; '.join(where)})")


def requests_session(cfg: PandaConnectionConfig) -> Any:
    """A requests Session whose https connections use :func:`ssl_context` (the same trust store as
    httpx, not certifi; a new context, hence a new handshake, when the proxy file is replaced)."""
    import requests
    from requests.adapters import HTTPAdapter

    class _Adapter(HTTPAdapter):
        def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
            host, kwargs = super().build_connection_pool_key_attributes(request, verify, None)
            if host.get("scheme") == "https":
                ctx = ssl_context(cfg, "requests") or _build(trust_store(cfg.verify), None, None, "requests")
                kwargs = {"ssl_context": ctx, "cert_reqs": "CERT_NONE" if ctx.verify_mode == ssl.CERT_NONE
                          else "CERT_REQUIRED"}
            return host, kwargs

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            """Everything is in the SSL context: never let requests add certifi or a cert file to it."""

    session = requests.Session()
    session.mount("https://", _Adapter())
    return session
