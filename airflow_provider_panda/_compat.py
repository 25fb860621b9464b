"""Airflow 3.x differences in one place: prefer ``airflow.sdk``, fall back where a release lacks it."""

from __future__ import annotations

import asyncio
from typing import Any

try:  # Airflow >= 3.1
    from airflow.sdk import BaseHook
except ImportError:  # Airflow 3.0
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]

try:  # Airflow >= 3.1
    from airflow.sdk import conf
except ImportError:  # Airflow 3.0
    from airflow.configuration import conf  # type: ignore[no-redef]

try:  # Airflow >= 3.1
    from airflow.sdk.log import mask_secret
except ImportError:  # Airflow 3.0
    from airflow.sdk.execution_time.secrets_masker import mask_secret  # type: ignore[no-redef]


async def aget_connection(conn_id: str) -> Any:
    """An Airflow connection from async code without blocking the event loop."""
    getter = getattr(BaseHook, "aget_connection", None)
    if getter is not None:  # Airflow >= 3.1
        return await getter(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)


__all__ = ["BaseHook", "aget_connection", "conf", "mask_secret"]
