"""What differs between the Airflow releases this provider supports (3.1 and later), in one place."""

from __future__ import annotations

try:
    from airflow.sdk import conf
except ImportError:  # Airflow < 3.2 has no conf in the task SDK
    from airflow.configuration import conf  # type: ignore[no-redef]

__all__ = ["conf"]
