"""Chaining PanDA outputs between Airflow tasks without ceremony (real ``dag.test()`` runs against the local
PanDA server): the ``panda_outputs`` filter in every PanDA operator's templates with nothing registered, for
unmapped and mapped consumers; a mapped producer's outputs, all map indexes in order, each dataset once;
``in_ds`` from an upstream task's list XCom; and the error for an ``in_ds`` that is not dataset names."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from airflow_runs import run_dag as _run_dag
from test_task_builder import CACHE, SANDBOX, normalise_sandbox, prun_params

from airflow_provider_panda.builder import PrunTask
from airflow_provider_panda.exceptions import PandaInputError

FILTER = "{{ ti | panda_outputs('generate') }}"
FAST = "poll_interval=0.05"


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env()


def run_dag(body: str) -> Any:
    """Run the DAG body as written (its ``$`` are PanDA's, not run_dag's substitutions)."""
    return _run_dag(body.replace("$", "$$"))


def submitted(server: Any, prefix: str) -> dict[str, Any]:
    """The local server's tasks whose name starts with ``prefix``, by the rest of their name."""
    return {t.name[len(prefix):].rstrip("/"): t for t in server.sim.tasks.values() if t.name.startswith(prefix)}


def input_templates(task: Any) -> list[str]:
    """The datasets of the task's input templates, as JEDI reads them."""
    return [i["dataset"] for i in task.params["jobParameters"]
            if isinstance(i, dict) and i.get("type") == "template" and i.get("param_type") == "input"]


def raw_consumer(name: str, in_ds: str) -> dict[str, Any]:
    """A hand-written task parameter map (``task_params``) reading ``in_ds``."""
    return {"taskName": name, "vo": "atlas", "prodSourceLabel": "user", "taskType": "anal", "dsForIN": in_ds,
            "nFilesPerJob": 1, "log": {"type": "template", "param_type": "log", "value": f"{name}.log.${{SN}}.tgz"},
            "jobParameters": [{"type": "template", "param_type": "input", "value": '-i "${IN/T}"',
                               "dataset": in_ds, "expand": True},
                              {"type": "constant", "value": "ana.sh"}]}


# --- the filter, nothing registered ------------------------------------------------------------


def test_filter_needs_no_registration_in_any_consumer(panda_server):
    """One producer; consumers of every kind name its outputs with the filter. The DAG registers nothing."""
    tag = uuid4().hex[:8]
    prefix = f"user.alice.chain.{tag}."
    body = f"""
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    generate = SubmitTaskOperator(task_id='generate', {FAST}, panda_task=PrunTask(
        exec='gen.sh %RNDM:1', out_ds='{prefix}generate', outputs=['evt.root', 'aux.txt'], n_jobs=2))
    prun = SubmitTaskOperator(task_id='prun', {FAST}, panda_task=PrunTask(
        exec='ana.sh %IN', in_ds="{FILTER}", out_ds='{prefix}prun', n_files_per_job=1))
    raw = SubmitTaskOperator(task_id='raw', {FAST}, task_params={raw_consumer(prefix + 'raw', FILTER)!r})

    @task.panda({FAST})
    def decorated(in_ds: str) -> PrunTask:
        return PrunTask(exec='ana.sh %IN', in_ds=in_ds, out_ds='{prefix}decorated', n_files_per_job=1)

    @task.panda({FAST})
    def described() -> PrunTask:
        return PrunTask(exec='ana.sh %IN', in_ds="{FILTER}", out_ds='{prefix}described', n_files_per_job=1)

    generate >> [prun, raw, decorated(in_ds="{FILTER}"), described()]
    """
    run = run_dag(body)
    consumers = ("prun", "raw", "decorated", "described")
    assert run.states == {"generate": "success", **dict.fromkeys(consumers, "success")}
    outputs = [o["did"] for o in run.xcom("generate", "output_datasets") if o["type"] == "output"]
    assert outputs == [f"user.alice:{prefix}generate_evt.root/", f"user.alice:{prefix}generate_aux.txt/"]
    tasks = submitted(panda_server, prefix)
    for name in consumers:
        assert tasks[name].params["dsForIN"] == ",".join(outputs), name  # outputs only: no log container
        assert input_templates(tasks[name]) == [",".join(outputs)], name
        assert tasks[name].status == "done" and run.xcom(name) == tasks[name].task_id


# --- a mapped producer, unmapped and mapped consumers ------------------------------------------

SEEDS = [30, 10, 20, 30]  # map index 3 adopts map index 0's PanDA task: the same outputs, pushed twice


def test_mapped_producer_feeds_every_map_index_in_order(panda_server):
    tag = uuid4().hex[:8]
    prefix = f"user.alice.mapchain.{tag}."
    body = f"""
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    @task.panda({FAST}, if_exists='adopt')
    def generate(seed: int) -> PrunTask:
        return PrunTask(exec=f'gen.sh --seed {{seed}} %RNDM:1', out_ds=f'{prefix}gen.{{seed}}', outputs=['evt.root'],
                        n_jobs=1)

    made = generate.expand(seed={SEEDS!r})

    # unmapped consumer
    analyse = SubmitTaskOperator(task_id='analyse', {FAST}, panda_task=PrunTask(
        exec='ana.sh %IN', in_ds="{FILTER}", out_ds='{prefix}analyse', n_files_per_job=1))
    # mapped consumers: builders as dicts of fields, hand-written maps, and TaskFlow
    sweep = SubmitTaskOperator.partial(task_id='sweep', {FAST}).expand(panda_task=[
        dict(exec=f'ana.sh --cut {{cut}} %IN', in_ds="{FILTER}", out_ds=f'{prefix}sweep.{{cut}}', n_files_per_job=1)
        for cut in (1, 2)])
    raw = SubmitTaskOperator.partial(task_id='raw', {FAST}).expand(
        task_params=[{raw_consumer(prefix + 'raw.0', FILTER)!r}, {raw_consumer(prefix + 'raw.1', FILTER)!r}])

    @task.panda({FAST})
    def cut(level: int, in_ds: str) -> PrunTask:
        return PrunTask(exec=f'ana.sh --level {{level}} %IN', in_ds=in_ds, out_ds=f'{prefix}cut.{{level}}',
                        n_files_per_job=1)

    made >> [analyse, sweep, raw, cut.partial(in_ds="{FILTER}").expand(level=[1, 2])]
    """
    run = run_dag(body)
    consumers = ["analyse", "sweep.1", "sweep.2", "raw.0", "raw.1", "cut.1", "cut.2"]
    assert set(run.states.values()) == {"success"} and len(run.states) == len(SEEDS) + len(consumers), run.states
    # what the producer's map indexes pushed, in map-index order, each container once (index 3 repeats 0)
    pushed = [o["did"] for i in range(len(SEEDS)) for o in run.xcom("generate", "output_datasets", map_index=i)
              if o["type"] == "output"]
    expected = [f"user.alice:{prefix}gen.{seed}_evt.root/" for seed in (30, 10, 20)]
    assert pushed == [*expected, expected[0]]
    tasks = submitted(panda_server, prefix)
    assert {name for name in tasks if name.startswith("gen.")} == {"gen.30", "gen.10", "gen.20"}  # one task each
    for name in consumers:  # on the PanDA side: every producer container, in map-index order, no log
        assert tasks[name].params["dsForIN"] == ",".join(expected), name
        assert input_templates(tasks[name]) == [",".join(expected)], name


# --- in_ds from an upstream task's XCom --------------------------------------------------------

DATASETS = ["user.alice:user.alice.picked.a_evt.root/", "mc16_13TeV:mc16_13TeV.361107.PhPy8EG.DAOD"]


@pytest.mark.parametrize("returns, native", [
    ("DATASETS", False),                 # a list XCom, rendered as a Python list literal
    ("json.dumps(DATASETS)", False),     # a JSON list in a string
    ("tuple(DATASETS)", False),          # a tuple XCom (Airflow stores it as a list)
    ("DATASETS", True),                  # render_template_as_native_obj: the list itself
], ids=["list", "json", "tuple", "native"])
def test_in_ds_from_an_upstream_list_xcom(panda_server, returns, native):
    tag = uuid4().hex[:8]
    prefix = f"user.alice.picked.{tag}."
    body = f"""
    import json
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    dag.render_template_as_native_obj = {native}
    DATASETS = {DATASETS!r}

    @task
    def pick():
        return {returns}

    pick() >> SubmitTaskOperator(task_id='analyse', {FAST}, panda_task=PrunTask(
        exec='ana.sh %IN', in_ds="{{{{ ti.xcom_pull(task_ids='pick') }}}}", out_ds='{prefix}analyse',
        n_files_per_job=1))
    """
    run = run_dag(body)
    assert run.states == {"pick": "success", "analyse": "success"}
    task = submitted(panda_server, prefix)["analyse"]
    assert task.params["dsForIN"] == ",".join(DATASETS) and input_templates(task) == [",".join(DATASETS)]
    assert task.params["cliParams"].startswith(f"prun --exec \"ana.sh %IN\" --outDS {prefix}analyse --inDS "
                                               f"{','.join(DATASETS)} ")


@pytest.mark.parametrize("in_ds", [
    ["d.a", "d.b"], ("d.a", "d.b"), "d.a,d.b", "['d.a', 'd.b']", '["d.a", "d.b"]', "('d.a', 'd.b')",
    ["d.a", "['d.b']"], [" d.a , d.b "],
], ids=["list", "tuple", "commas", "python-literal", "json", "tuple-literal", "literal-in-list", "commas-in-list"])
def test_several_inputs_make_the_map_prun_makes(in_ds):
    """However the names come, the map is prun's for ``--inDS d.a,d.b`` (panda-client 2.2.0, the witness)."""
    options = ["--exec", "ana %IN", "--outDS", "user.alice.multi", "--inDS", "d.a,d.b", "--noBuild"]
    builder = PrunTask(exec="ana %IN", out_ds="user.alice.multi", in_ds=in_ds)
    assert builder.prun_args() == options
    assert builder.to_params(source_url=CACHE, sandbox_name=SANDBOX) == normalise_sandbox(prun_params(options),
                                                                                          SANDBOX)


# --- malformed in_ds ---------------------------------------------------------------------------

BAD_IN_DS = [
    ("list of non-names", "['d.a', 3]", "looks like a list but is not a list of dataset names"),
    ("unclosed list", "['d.a', 'd.b'", "looks like a list but is not a list of dataset names"),
    ("nested list", "[['d.a'], 'd.b']", "looks like a list but is not a list of dataset names"),
    ("an expression", "['d.a'] + ['d.b']", "looks like a list but is not a list of dataset names"),
    ("a dict", "{'d.a': 1}", "is not a dataset name"),
    ("semicolons", "d.a;d.b", "is not a dataset name"),
    ("spaces", "d.a d.b", "is not a dataset name"),
    ("None", "None", "an empty XCom"),
    ("an empty list", "[]", "names no dataset"),
]


@pytest.mark.parametrize("in_ds, words", [c[1:] for c in BAD_IN_DS], ids=[c[0] for c in BAD_IN_DS])
def test_malformed_in_ds_says_how_to_pass_several(in_ds, words):
    with pytest.raises(PandaInputError) as info:
        PrunTask(exec="ana %IN", out_ds="user.alice.bad", in_ds=in_ds)
    assert words in str(info.value)
    if words != "names no dataset":
        assert "several datasets go as a list (in_ds=['scope:a', 'scope:b'])" in str(info.value)


def test_in_ds_of_other_types_says_how_to_pass_several():
    with pytest.raises(PandaInputError, match=r"in_ds must be dataset names, got list .*several datasets go as"):
        PrunTask(exec="ana %IN", out_ds="user.alice.bad", in_ds=["d.a", 3])
    with pytest.raises(PandaInputError, match=r"in_ds must be dataset names, got dict"):
        PrunTask(exec="ana %IN", out_ds="user.alice.bad", in_ds={"d.a": 1})


def test_malformed_in_ds_from_an_upstream_fails_before_any_request(panda_server, capfd):
    """A rendered in_ds that is not dataset names fails the task with the hint; nothing is sent to PanDA."""
    before = panda_server.panda.requests["task/submit"]
    body = f"""
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    @task
    def pick():
        return {{'user.alice:user.alice.a/': 1}}

    pick() >> SubmitTaskOperator(task_id='analyse', {FAST}, panda_task=PrunTask(
        exec='ana.sh %IN', in_ds="{{{{ ti.xcom_pull(task_ids='pick') }}}}", out_ds='user.alice.bad.{uuid4().hex[:8]}',
        n_files_per_job=1))
    """
    run = run_dag(body)
    assert run.states == {"pick": "success", "analyse": "failed"}
    out = "".join(capfd.readouterr())
    assert "is not a dataset name" in out and "several datasets go as a list (in_ds=['scope:a', 'scope:b'])" in out
    assert panda_server.panda.requests["task/submit"] == before


def test_filter_on_a_task_that_pushed_nothing_names_it(panda_server, capfd):
    before = panda_server.panda.requests["task/submit"]
    body = f"""
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    @task
    def generate():
        return 1

    generate() >> SubmitTaskOperator(task_id='analyse', {FAST}, panda_task=PrunTask(
        exec='ana.sh %IN', in_ds="{FILTER}", out_ds='user.alice.nothing.{uuid4().hex[:8]}', n_files_per_job=1))
    """
    run = run_dag(body)
    assert run.states == {"generate": "success", "analyse": "failed"}
    assert "panda_outputs('generate'): no task 'generate' of this DAG run pushed 'output_datasets'" in "".join(
        capfd.readouterr())
    assert panda_server.panda.requests["task/submit"] == before


def test_a_list_literal_is_read_as_data_never_run():
    """Code in a list literal is refused, not evaluated."""
    with pytest.raises(PandaInputError, match="looks like a list"):
        PrunTask(exec="ana %IN", out_ds="user.alice.x", in_ds="[__import__('os').getcwd()]")
    with pytest.raises(PandaInputError, match="looks like a list"):
        PrunTask(exec="ana %IN", out_ds="user.alice.x", in_ds="[" * 100_000 + "]" * 100_000)
