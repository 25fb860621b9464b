"""The auth manager the browser tier's api-server runs (``[core] auth_manager``): Airflow's simple one,
refusing every DAG to the user ``outsider``, as a deployment's auth manager refuses a DAG per user."""

from __future__ import annotations

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager


class RefusingAuthManager(SimpleAuthManager):
    """SimpleAuthManager that lets the user ``outsider`` read no DAG."""

    def is_authorized_dag(self, *, method, user, access_entity=None, details=None):  # type: ignore[override]
        if user.get_name() == "outsider":
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
