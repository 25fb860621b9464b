"""Run real DAGs in tests: write a DAG file into the dags folder, serialise it, ``dag.test()`` it,
then read task states and XComs from Airflow's metadata database."""

from __future__ import annotations

import os
import string
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEADER = """\
from datetime import datetime, timedelta
from airflow.sdk import DAG
from airflow_provider_panda.operators import (
    FileRecoveryOperator, FinishTaskOperator, KillTaskOperator, RetryTaskOperator, SubmitTaskOperator,
)
from airflow_provider_panda.sensors import TaskStatusSensor
"""


@dataclass
class Run:
    dag_id: str
    run_id: str
    state: str
    states: dict[str, str]

    def tries(self, task_id: str, map_index: int = -1) -> int:
        """How many tries the task instance ran (its try_number)."""
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            ti = session.query(TaskInstance).filter_by(dag_id=self.dag_id, run_id=self.run_id, task_id=task_id,
                                                       map_index=map_index).one()
            return ti.try_number

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.query(XComModel).filter_by(dag_id=self.dag_id, run_id=self.run_id, task_id=task_id,
                                                     key=key, map_index=map_index).first()
            return None if row is None else XComModel.deserialize_value(row)


def ensure_db() -> None:
    """Create the metadata database of the test session's AIRFLOW_HOME once."""
    home = Path(os.environ["AIRFLOW_HOME"])
    if (home / ".db-ready").exists():
        return
    from airflow.utils.db import initdb

    initdb()
    (home / ".db-ready").touch()


def run_dag(body: str, **fmt: Any) -> Run:
    """Run the tasks in ``body`` (put under ``with DAG(...) as dag:``; ``$name`` takes ``fmt[name]``)."""
    from airflow.utils.cli import get_bagged_dag

    ensure_db()
    dag_id = f"test_{uuid.uuid4().hex[:12]}"
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dag_id}.py"
    source = HEADER + f"\nwith DAG({dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1)) as dag:\n"
    source += textwrap.indent(string.Template(textwrap.dedent(body)).substitute(fmt), "    ")
    path.write_text(source)
    dag = get_bagged_dag(None, dag_id, dagfile_path=str(path))
    dag_run = dag.test()
    states = {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(getattr(ti.state, "value",
                                                                                                 ti.state))
              for ti in dag_run.get_task_instances()}
    return Run(dag_id, dag_run.run_id, str(getattr(dag_run.state, "value", dag_run.state)), states)


#: For a DAG file run by a real scheduler: SubmitTaskOperator with the early-trigger race made certain
#: (the deferring worker exits 3 s after deferral, the resumed try runs 8 s), and the same without the
#: trigger's event hold (triggers.wait.EVENT_HOLD), the control (tests/test_early_trigger.py).
RACE_OPERATORS = '''
import time

from airflow.sdk import BaseOperatorLink

from airflow_provider_panda.operators import SubmitTaskOperator


class SlowExit(BaseOperatorLink):
    """Resolved by finalize() after defer(): the deferring worker exits 3 s after deferral, so its
    'success' reaches the scheduler seconds after the task was deferred."""

    name = "slow exit"

    def get_link(self, operator, *, ti_key):
        time.sleep(3)
        return "https://example.invalid/"


class Submit(SubmitTaskOperator):
    operator_extra_links = (*SubmitTaskOperator.operator_extra_links, SlowExit())

    def execute_complete(self, context, event, **kwargs):
        time.sleep(8)  # the resumed try is still running when the deferral's late 'success' lands
        return super().execute_complete(context, event, **kwargs)


class SubmitWithoutHold(Submit):
    def defer(self, *, trigger, **kwargs):
        trigger.not_before = None
        super().defer(trigger=trigger, **kwargs)
'''
