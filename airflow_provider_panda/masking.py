"""Secrets registered with Airflow's masker, so no log line shows them (used by config and auth)."""

from __future__ import annotations


def mask(secret: str | None) -> None:
    """Register a secret (a token, a refresh token) with Airflow's masker; nothing for an empty one."""
    if not secret:
        return
    from airflow.sdk.log import mask_secret

    mask_secret(secret)
