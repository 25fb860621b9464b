"""Every Airflow name the provider cannot take from ``airflow.sdk`` (or another documented public
module) in every release it supports (3.1.2 and later), in one place: each version shim and each
unavoidable private import, with the release that lacks the public name. Other modules import these
from here, never from ``airflow.exceptions``, ``airflow.utils``, ``airflow.configuration`` or
``airflow.sdk.execution_time``/``definitions`` directly."""

from __future__ import annotations

import asyncio
from typing import Any

# Public in every supported release (airflow.sdk.log); here so masking.py takes it from one place.
from airflow.sdk.log import mask_secret

try:
    from airflow.sdk import conf
except ImportError:  # Airflow 3.1 (task SDK 1.1) has no conf in airflow.sdk (added in 3.2)
    from airflow.configuration import conf  # type: ignore[no-redef]

try:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout
except ImportError:  # Airflow 3.1 has them only in airflow.exceptions (the task SDK's since 3.2)
    from airflow.exceptions import AirflowFailException, AirflowSensorTimeout  # type: ignore[no-redef]

try:
    from airflow.sdk.bases.decorator import determine_kwargs
except ImportError:  # Airflow 3.1 keeps it in airflow.utils.operator_helpers (the task SDK's since 3.2)
    from airflow.utils.operator_helpers import determine_kwargs  # type: ignore[no-redef]

try:
    from airflow.sdk import NEVER_EXPIRE
except ImportError:  # Airflow 3.1 and 3.2 have no task state store, hence no retention to give it
    NEVER_EXPIRE = None

__all__ = [
    "NEVER_EXPIRE",
    # lazy, see _PRIVATE: the api-server's names the PanDA view (ui/) uses
    "AirflowPlugin",  # noqa: F822
    "Connection",  # noqa: F822
    "DBDagBag",  # noqa: F822
    "DagAccessEntity",  # noqa: F822
    "DagRun",  # noqa: F822
    "TaskInstance",  # noqa: F822
    "XComModel",  # noqa: F822
    "create_session",  # noqa: F822
    "requires_access_dag",  # noqa: F822
    "SET_DURING_EXECUTION",  # noqa: F822 - lazy, see _PRIVATE
    "AirflowFailException",
    "AirflowSensorTimeout",
    "XCom",  # noqa: F822 - lazy
    "aget_connection",
    "conf",
    "context_merge",  # noqa: F822 - lazy
    "determine_kwargs",
    "mask_secret",
]


#: Not exported by airflow.sdk in any supported release (3.1 to 3.3), and with no public equivalent;
#: imported on first use (PEP 562) so that the hook and the triggerer, which import this module, do not
#: depend on these private modules:
_PRIVATE = {
    # the sentinel Airflow's own @task decorators give an argument the callable fills in at run time
    # (rendered as "DYNAMIC (set during execution)")
    "SET_DURING_EXECUTION": "airflow.sdk.definitions._internal.types",
    # merging op_kwargs into the context, as Airflow's decorators do
    "context_merge": "airflow.sdk.definitions.context",
    # the configured [core] xcom_backend class; airflow.sdk exports only BaseXCom, which would bypass a
    # custom backend's deserialize_value (Airflow's standard provider reads its links through this one)
    "XCom": "airflow.sdk.execution_time.xcom",
    # The api-server's side, for the PanDA view (ui/): a plugin's FastAPI app checks access as Airflow's
    # own routes do and reads Airflow's database; these modules are the same in 3.1.2 to 3.3.
    "AirflowPlugin": "airflow.plugins_manager",  # what Airflow's plugin docs import
    "requires_access_dag": "airflow.api_fastapi.core_api.security",
    "DagAccessEntity": "airflow.api_fastapi.auth.managers.models.resource_details",
    "Connection": "airflow.models.connection",  # the api-server's connection, from its secrets backends
    "DBDagBag": "airflow.models.dagbag",
    "DagRun": "airflow.models.dagrun",
    "TaskInstance": "airflow.models.taskinstance",
    "XComModel": "airflow.models.xcom",
    "create_session": "airflow.utils.session",
}


def __getattr__(name: str) -> Any:
    if name in _PRIVATE:
        import importlib

        return getattr(importlib.import_module(_PRIVATE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def aget_connection(conn_id: str) -> Any:
    """``BaseHook.aget_connection``; Airflow 3.1's imports the task supervisor's channel before it looks at
    the secrets backends (environment variables), so outside a worker or triggerer it raises ImportError:
    there, read the connection the sync way (backends first), in a thread."""
    from airflow.sdk import BaseHook

    try:
        return await BaseHook.aget_connection(conn_id)
    except ImportError:  # Airflow 3.1 only (see above); 3.2+ reads the backends first
        return await asyncio.to_thread(BaseHook.get_connection, conn_id)
