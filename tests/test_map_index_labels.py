"""The map index's default label (``map_index_template``) in real DAG runs (``dag.test()``): what the
task_instance table's ``rendered_map_index`` holds for plain, ``partial().expand()``-mapped (sync and
deferred), ``@task.panda``-mapped and sensor instances, and that a template the user chose wins."""

from __future__ import annotations

from uuid import uuid4

import pytest
from airflow_runs import run_dag
from conftest import task_params

FAST = "poll_interval=0.05"


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def labels(run) -> dict[tuple[str, int], str | None]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(ti.task_id, ti.map_index): ti.rendered_map_index
                for ti in session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id)}


def test_mapped_instances_are_labelled_by_their_panda_task_unless_the_user_chose(panda_server):
    tag = uuid4().hex[:8]
    names = [task_params(f"lbl{i}.{tag}")["taskName"] for i in range(5)]
    params = [{**task_params("x"), "taskName": name} for name in names]
    body = f"""
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    plain = SubmitTaskOperator(task_id='plain', task_params=$p0, {FAST})
    fan = SubmitTaskOperator.partial(task_id='fan', {FAST}).expand(task_params=$fan)
    deferred = SubmitTaskOperator.partial(task_id='deferred', deferrable=True, {FAST}).expand(task_params=$d)
    mine = SubmitTaskOperator.partial(task_id='mine', map_index_template='run {{{{ ti.map_index }}}}',
                                      {FAST}).expand(task_params=$mine)

    @task.panda({FAST})
    def gen(seed: int) -> PrunTask:
        return PrunTask(exec='gen.sh %RNDM:1', out_ds=f'user.alice.lbl.gen{{seed}}.{tag}', outputs=['e.root'],
                        n_jobs=1)

    made = gen.expand(seed=[7])
    watch = TaskStatusSensor.partial(task_id='watch', poke_interval=0.05).expand(
        jedi_task_id=fan.output)
    """
    run = run_dag(body, p0=repr(params[0]), fan=repr(params[1:3]), d=repr(params[3:4]), mine=repr(params[4:5]))
    assert set(run.states.values()) == {"success"}, run.states
    ids = {t.name: t.task_id for t in panda_server.sim.tasks.values()}
    got = labels(run)
    assert got[("plain", -1)] == names[0]
    assert got[("fan", 0)] == names[1] and got[("fan", 1)] == names[2], got
    assert got[("deferred", 0)] == names[3], got
    assert got[("mine", 0)] == "run 0", got  # the user's template, not ours
    assert got[("gen", 0)] == f"user.alice.lbl.gen7.{tag}", got
    assert got[("watch", 0)] == f"PanDA task {ids[names[1]]}", got
    assert got[("watch", 1)] == f"PanDA task {ids[names[2]]}", got
