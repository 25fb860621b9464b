"""The one place that knows the credentials this process holds, whatever their source.

Every credential is registered here when it is read: the id token from the password or extra
``token`` and the refresh token (:mod:`.config`, whenever a connection's settings are built), the id
token and refresh token of a ``token_file`` (plain or the IdP's JSON, on every read), a token
obtained by refresh and a refresh token the IdP rotated (:mod:`.auth`), the private key material of
the x509 proxy (:mod:`.tls`, once per version of the file). A registered secret is

- redacted by :func:`redact` from every text this provider makes (exception texts, hence trigger
  events and the log lines quoting them, for the sync hook and the async client alike), and
- registered with Airflow's secrets masker, so any log line of a task or the triggerer hides it
  too, whoever wrote the line.

The set is per process (like Airflow's masker): a long-lived triggerer redacts the tokens of every
connection it has read, including ones replaced since.
"""

from __future__ import annotations

import re
import threading

#: Shorter strings are not redacted (Airflow's masker skips them too, ``min_length_masked_secret``):
#: replacing every "abc" in every message would garble texts without hiding a credential.
MIN_LENGTH = 5
REPLACEMENT = "***"

_LOCK = threading.Lock()
_SECRETS: set[str] = set()
_PATTERN: re.Pattern[str] | None = None

_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----(.*?)-----END \1PRIVATE KEY-----", re.DOTALL)


def mask(secret: str | None) -> None:
    """Register a credential: :func:`redact` removes it from our texts and Airflow's masker from log
    lines. Nothing for an empty or short one; a known one costs a set lookup (token files are read
    on every request)."""
    global _PATTERN
    if not isinstance(secret, str) or len(secret) < MIN_LENGTH:
        return
    with _LOCK:
        if secret in _SECRETS:
            return
        _SECRETS.add(secret)
        # longest first: a secret that contains another is replaced whole
        _PATTERN = re.compile("|".join(re.escape(s) for s in sorted(_SECRETS, key=len, reverse=True)))
    airflow_mask(secret)


def airflow_mask(secret: str) -> None:
    """Tell Airflow's secrets masker (in a task, the supervisor's too)."""
    from airflow_provider_panda.compat import mask_secret

    mask_secret(secret)


def mask_private_keys(pem: bytes | str) -> None:
    """Register the private key material of a PEM file (an x509 proxy holds its key next to the
    certificates): each key block as written, its base64 body in one piece and line by line (a text
    may quote the file, a part of it, or the key without its line breaks). Certificates are public."""
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    for match in _PEM_KEY.finditer(text):
        mask(match.group(0))
        lines = [line.strip() for line in match.group(2).splitlines()]
        body = [line for line in lines if line and ":" not in line]  # not "Proc-Type: 4,ENCRYPTED" headers
        mask("".join(body))
        for line in body:
            mask(line)


def redact(text: str) -> str:
    """``text`` with every registered credential replaced by ``***``."""
    pattern = _PATTERN
    if pattern is None or not text:
        return text
    return pattern.sub(REPLACEMENT, text)


def known(secret: str) -> bool:
    """Whether a credential is registered (for tests and diagnostics; never lists them)."""
    return secret in _SECRETS
