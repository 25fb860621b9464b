"""What differs between the Airflow releases this provider supports (3.1 and later), in one place."""

from __future__ import annotations

import asyncio
from typing import Any

try:
    from airflow.sdk import conf
except ImportError:  # Airflow < 3.2 has no conf in the task SDK
    from airflow.configuration import conf  # type: ignore[no-redef]

__all__ = ["aget_connection", "conf"]


async def aget_connection(conn_id: str) -> Any:
    """``BaseHook.aget_connection``; Airflow 3.1's imports the task supervisor's channel before it looks at
    the secrets backends (environment variables), so outside a worker or triggerer it raises ImportError:
    there, read the connection the sync way (backends first), in a thread."""
    from airflow.sdk import BaseHook

    try:
        return await BaseHook.aget_connection(conn_id)
    except ImportError:
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
