"""The "PanDA monitor" extra link of every PanDA operator and sensor."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_panda import xcom


class PandaTaskLink(BaseOperatorLink):
    """Links a task instance to ``<monitor_url>/task/<jediTaskID>/`` (pushed as an XCom when known)."""

    name = "PanDA monitor"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        # In the worker the operator that ran knows whether it ever had a task: if not (it failed
        # before submitting), there is no XCom to ask for, and asking would log "XCom not found".
        if getattr(operator, "_jedi_task_id", "unknown") is None:
            return ""
        from airflow_provider_panda.compat import XCom

        return XCom.get_value(key=xcom.MONITOR_URL, ti_key=ti_key) or ""
