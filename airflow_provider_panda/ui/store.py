"""What the view reads from Airflow's own database, in the api-server: a DAG run's task instances,
the XComs the provider's operators push (xcom.py), and each task's connection id from the run's
serialized DAG. Only read, and only for the DAG the caller was allowed to read (app.py checks first).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_panda import xcom

#: The XComs the view shows.
KEYS = (xcom.JEDI_TASK_ID, xcom.MONITOR_URL, xcom.ATTEMPTS, xcom.OUTPUT_DATASETS)
DEFAULT_CONN_ID = "panda_default"


def conn_id_of(task: Any) -> str:
    """The connection a task talks to PanDA through: its ``panda_conn_id`` (a mapped task's from its
    partial arguments), else the operators' default."""
    value = getattr(task, "panda_conn_id", None)
    if not value:
        value = (getattr(task, "partial_kwargs", None) or {}).get("panda_conn_id")
    return value if isinstance(value, str) and value else DEFAULT_CONN_ID


def run_rows(dag_id: str, run_id: str, task_id: str | None = None,
             map_index: int | None = None) -> dict[str, Any] | None:
    """The run's state and, per task instance (or only ``task_id``'s, or one map index of it), its
    state and the provider's XComs: ``{"run_state", "rows": [...]}``; None when there is no such run.
    Rows without a jediTaskID are left out."""
    from airflow_provider_panda.compat import DagRun, DBDagBag, TaskInstance, XComModel, create_session

    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one_or_none()
        if run is None:
            return None
        query = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                                XComModel.key.in_(KEYS))
        ti_query = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        if task_id is not None:
            query = query.filter(XComModel.task_id == task_id)
            ti_query = ti_query.filter(TaskInstance.task_id == task_id)
        if map_index is not None:
            query = query.filter(XComModel.map_index == map_index)
            ti_query = ti_query.filter(TaskInstance.map_index == map_index)
        values: dict[tuple[str, int], dict[str, Any]] = {}
        for row in query:
            values.setdefault((row.task_id, row.map_index), {})[row.key] = XComModel.deserialize_value(row)
        tis = {(ti.task_id, ti.map_index): ti for ti in ti_query}
        try:
            dag = DBDagBag().get_dag_for_run(run, session)
        except Exception:  # a DAG whose serialization cannot be read: the default connection
            dag = None
        rows = []
        for (tid, index), found in sorted(values.items()):
            if found.get(xcom.JEDI_TASK_ID) is None:
                continue
            ti = tis.get((tid, index))
            task = dag.task_dict.get(tid) if dag is not None else None
            rows.append({
                "task_id": tid, "map_index": index,
                "name": getattr(ti, "rendered_map_index", None) if ti is not None else None,
                "state": str(ti.state.value if hasattr(ti.state, "value") else ti.state) if ti is not None
                and ti.state is not None else None,
                "try_number": getattr(ti, "try_number", None) if ti is not None else None,
                "jedi_task_id": found.get(xcom.JEDI_TASK_ID),
                "monitor_url": found.get(xcom.MONITOR_URL),
                "attempts": found.get(xcom.ATTEMPTS) or [],
                "outputs": found.get(xcom.OUTPUT_DATASETS) or [],
                "conn_id": conn_id_of(task),
            })
        state = run.state.value if hasattr(run.state, "value") else run.state
        return {"run_state": str(state) if state is not None else None, "rows": rows}
