"""The typed task builder (``airflow_provider_panda.builder``): its map equals what prun (panda-client 2.2.0)
builds for the same options; bad inputs fail clearly before any request; the operator and the decorator
submit builder tasks, with their sandbox, against the local server."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from airflow_runs import run_dag

from airflow_provider_panda import api
from airflow_provider_panda.builder import PrunTask, SecondaryInput, build_task_params, pack_sandbox
from airflow_provider_panda.exceptions import PandaInputError

WITNESS = Path(__file__).with_name("prun_witness.py")
SERVER = "https://pandaserver.example:25443"
CACHE = "https://pandacache.example:25443"
SANDBOX = "jobO.00000000-0000-0000-0000-000000000000.tar.gz"

#: What differs between prun's map and the builder's for the same options and why. prun in dry mode
#: makes no sandbox, so where it names the archive it writes None: "-a None" in jobParameters and
#: buildSpec.archiveName. Nothing else is left out of the comparison: osInfo is platform.platform()
#: of the submitting host in both (the same host here), sourceURL is the server or cache URL both are
#: given, and cliParams is the same prun command line (the builder's prun_args are asserted equal).
ENVIRONMENT_DEPENDENT = ("jobParameters[-a <sandbox>]", "buildSpec.archiveName")


def _witness_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CMTCONFIG", "CMAKE_PREFIX_PATH", "PANDA_EXEC_STRING", "X509_USER_PROXY")}
    env.update(PANDA_BEHIND_REAL_LB="1", PANDA_URL="http://pandaserver.example:25080/server/panda",
               PANDA_URL_SSL=SERVER + "/server/panda", PANDACACHE_URL=CACHE + "/server/panda")
    return env


def prun_params(options: list[str]) -> dict[str, Any]:
    """The map PrunScript.main(get_taskparams=True, dry_mode=True) returns for these prun options."""
    proc = subprocess.run([sys.executable, str(WITNESS), json.dumps(options)], env=_witness_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def normalise_sandbox(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Put the builder's sandbox name where prun's dry run writes None (ENVIRONMENT_DEPENDENT)."""
    params = json.loads(json.dumps(params))
    for item in params["jobParameters"]:
        if item.get("value") == "-a None":
            item["value"] = f"-a {name}"
    if "buildSpec" in params and params["buildSpec"].get("archiveName") is None:
        params["buildSpec"]["archiveName"] = name
    return params


# (case id, builder fields, the prun command line a user would type for the same task)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    ("no input", dict(exec="echo hello", out_ds="user.alice.noinput.001", n_events=10, n_events_per_job=5),
     ["--exec", "echo hello", "--outDS", "user.alice.noinput.001", "--nEvents", "10", "--nEventsPerJob", "5",
      "--noBuild"]),
    ("one input with %IN", dict(exec="cat %IN > out.txt", out_ds="user.alice.in1/", in_ds="mc16.ds.AOD/",
                                outputs=["out.txt"], n_files_per_job=5),
     ["--exec", "cat %IN > out.txt", "--outDS", "user.alice.in1/", "--inDS", "mc16.ds.AOD/", "--outputs",
      "out.txt", "--nFilesPerJob", "5", "--noBuild"]),
    ("several outputs", dict(exec="run.sh %IN", out_ds="user.alice.outs", in_ds="data18:data18.x.DAOD",
                             outputs=["out.root", "hist:h*.root", "log:run.json"]),
     ["--exec", "run.sh %IN", "--outDS", "user.alice.outs", "--inDS", "data18:data18.x.DAOD", "--outputs",
      "out.root,hist:h*.root,log:run.json", "--noBuild"]),
    ("events per job", dict(exec="gen --seed %RNDM:100 --skip %SKIPEVENTS --n %MAXEVENTS", out_ds="user.alice.gen",
                            n_events=1000, n_events_per_job=100, outputs=["evt.pool.root"]),
     ["--exec", "gen --seed %RNDM:100 --skip %SKIPEVENTS --n %MAXEVENTS", "--outDS", "user.alice.gen",
      "--outputs", "evt.pool.root", "--nEvents", "1000", "--nEventsPerJob", "100", "--noBuild"]),
    ("container image", dict(exec="python /app/run.py", out_ds="user.alice.cont", container_image="docker://busybox",
                             n_jobs=3),
     ["--exec", "python /app/run.py", "--outDS", "user.alice.cont", "--nJobs", "3", "--containerImage",
      "docker://busybox"]),
    ("memory and walltime", dict(exec="echo big", out_ds="user.alice.mem", memory=3000, fixed_memory=True,
                                 walltime_hours=2, cores=8),
     ["--exec", "echo big", "--outDS", "user.alice.mem", "--memory", "3000", "--fixedRamCount", "--maxWalltime",
      "2", "--nCore", "8", "--noBuild"]),
    ("working group", dict(exec="echo wg", out_ds="user.alice.wg", working_group="phys-higgs"),
     ["--exec", "echo wg", "--outDS", "user.alice.wg", "--workingGroup", "phys-higgs", "--noBuild"]),
    ("a site", dict(exec="echo site", out_ds="user.alice.site", site="ANALY_TEST", excluded_sites=["A", "B"]),
     ["--exec", "echo site", "--outDS", "user.alice.site", "--site", "ANALY_TEST", "--excludedSite", "A,B",
      "--noBuild"]),
    ("several sites", dict(exec="echo sites", out_ds="user.alice.sites", site=["S1", "S2"]),
     ["--exec", "echo sites", "--outDS", "user.alice.sites", "--site", "S1,S2", "--noBuild"]),
    ("several inputs", dict(exec="ana %IN %BKG", out_ds="user.alice.multi", in_ds=["d.a", "d.b"], outputs=["o.txt"],
                            secondary=[SecondaryInput("BKG", "mc.bkg", 2, "AOD", 1)], n_files_per_job=2),
     ["--exec", "ana %IN %BKG", "--outDS", "user.alice.multi", "--inDS", "d.a,d.b", "--secondaryDSs",
      "BKG:2:mc.bkg:AOD:1", "--outputs", "o.txt", "--nFilesPerJob", "2", "--noBuild"]),
    ("jobs over files", dict(exec="ana %IN", out_ds="user.alice.njobs", in_ds="d.a", n_files=8, n_jobs=4),
     ["--exec", "ana %IN", "--outDS", "user.alice.njobs", "--inDS", "d.a", "--nFiles", "8", "--nJobs", "4",
      "--noBuild"]),
    ("vo, label, attempts", dict(exec="echo vo", out_ds="user.alice.vo", vo="wlcg", prod_source_label="test",
                                 max_attempt=5, unique_name=False),
     ["--exec", "echo vo", "--outDS", "user.alice.vo", "--maxAttempt", "5", "--vo", "wlcg", "--prodSourceLabel",
      "test", "--noBuild", "--allowTaskDuplication"]),
    ("build step", dict(exec="./a.out", out_ds="user.alice.build", build=True, sandbox="."),
     ["--exec", "./a.out", "--outDS", "user.alice.build"]),
]


@pytest.mark.parametrize("fields, options", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_builder_map_equals_prun(fields, options):
    builder = PrunTask(**fields)
    assert builder.prun_args() == options  # so cliParams is the same command line
    source = SERVER if builder.vo else CACHE  # prun: the cache server unless --vo is given
    ours = builder.to_params(source_url=source, sandbox_name=SANDBOX)
    theirs = normalise_sandbox(prun_params(options), SANDBOX)
    assert ours == theirs


def test_the_witness_sees_a_difference():
    """The comparison can fail: one option more on prun's side is a different map."""
    fields, options = CASES[0][1], CASES[0][2]
    theirs = normalise_sandbox(prun_params([*options, "--memory", "1500"]), SANDBOX)
    assert PrunTask(**fields).to_params(source_url=CACHE, sandbox_name=SANDBOX) != theirs


# --- bad inputs --------------------------------------------------------------------------------

GOOD = dict(exec="echo hi", out_ds="user.alice.good")

# (case id, builder fields, words the error must contain); each fails when the builder is made
BAD_FIELDS = [
    ("missing out_ds", dict(exec="echo"), "out_ds"),
    ("empty out_ds", dict(exec="echo", out_ds=" "), "out_ds"),
    ("missing exec", dict(out_ds="user.alice.x"), "exec"),
    ("no user prefix", dict(GOOD, out_ds="mydata.test"), "user.<nickname>."),
    ("wrong nickname", dict(GOOD, out_ds="user.bob.x", nickname="alice"), "user.alice."),
    ("bad character in out_ds", dict(GOOD, out_ds="user.alice.a;b"), "';'"),
    ("space in out_ds", dict(GOOD, out_ds="user.alice.a b"), "letters, digits"),
    ("wildcard in out_ds", dict(GOOD, out_ds="user.alice.a*"), "'*'"),
    ("out_ds too long", dict(GOOD, out_ds="user.alice." + "x" * 130), "at most 132"),
    ("empty field in out_ds", dict(GOOD, out_ds="user.alice..x"), "'..'"),
    ("output container too long", dict(GOOD, out_ds="user.alice." + "x" * 110, outputs=["a" * 20 + ".root"]),
     "output container"),
    ("output with slash", dict(GOOD, outputs=["dir/out.root"]), "'/'"),
    ("output bad char", dict(GOOD, outputs=["out$.root"]), "'$'"),
    ("duplicate output suffix", dict(GOOD, outputs=["a:x.root", "a:y.root"]), "suffix 'a'"),
    ("too many outputs", dict(GOOD, outputs=[f"o{i}.root" for i in range(11)]), "at most 10"),
    ("bad in_ds", dict(GOOD, in_ds="data set"), "not a dataset name"),
    ("negative n_jobs", dict(GOOD, n_jobs=-3), "n_jobs must be a positive integer"),
    ("zero events per job", dict(GOOD, n_events_per_job=0), "n_events_per_job must be a positive integer"),
    ("float memory", dict(GOOD, memory=2.5), "memory must be a positive integer"),
    ("bool cores", dict(GOOD, cores=True), "cores must be a positive integer"),
    ("too many attempts", dict(GOOD, max_attempt=51), "at most 50"),
    ("files per job without input", dict(GOOD, n_files_per_job=2), "needs an input dataset"),
    ("unknown placeholder", dict(GOOD, exec="run %INPUT"), "%INPUT"),
    ("%IN without input", dict(GOOD, exec="cat %IN"), "no input dataset"),
    ("%DB not supported", dict(GOOD, exec="run %DB:ddo.x:DBRelease.tgz"), "%DB"),
    ("bad secondary stream", dict(GOOD, in_ds="d.a", secondary=[SecondaryInput("bkg", "d.b", 1)]), "stream name"),
    ("bad site", dict(GOOD, site="ANALY X"), "site names"),
    ("bad vo", dict(GOOD, vo="ATLAS!"), "vo must be"),
    ("bad label", dict(GOOD, prod_source_label="User Label"), "prod_source_label"),
    ("container with space", dict(GOOD, container_image="docker://a b"), "container_image"),
    ("extra overrides taskName", dict(GOOD, extra={"taskName": "x"}), "may not set"),
    ("build without sandbox", dict(GOOD, build=True), "needs a sandbox"),
]


@pytest.mark.parametrize("fields, words", [c[1:] for c in BAD_FIELDS], ids=[c[0] for c in BAD_FIELDS])
def test_bad_builder_input(fields, words):
    with pytest.raises(PandaInputError) as info:
        PrunTask(**fields)
    assert words in str(info.value)


def test_templated_names_are_checked_once_rendered():
    """A templated name cannot be checked when the DAG is parsed: it is when the task is built."""
    builder = PrunTask(exec="echo", out_ds="{{ params.name }}")
    rendered = builder.resolve({"params": {"name": "mydata.x"}})
    assert rendered["out_ds"] == "mydata.x"
    with pytest.raises(PandaInputError, match="user.<nickname>."):
        PrunTask.from_dict(rendered).to_params()
    counted = PrunTask(exec="echo", out_ds="user.alice.n", n_jobs="{{ params.n }}")
    assert PrunTask.from_dict(counted.resolve({"params": {"n": 4}})).to_params()["nEvents"] == 4
    with pytest.raises(PandaInputError, match="n_jobs must be a positive integer"):
        PrunTask.from_dict(counted.resolve({"params": {"n": "four"}}))


def test_unknown_dict_fields_are_an_error():
    with pytest.raises(PandaInputError, match="unknown task field"):
        PrunTask.from_dict(dict(GOOD, n_job=3))


SANDBOX_CASES = [
    ("missing directory", lambda tmp: dict(GOOD, sandbox=str(tmp / "nowhere")), "does not exist"),
    ("a file, not a directory", lambda tmp: dict(GOOD, sandbox=str(_file(tmp / "f.txt", 10))), "not a directory"),
    ("too large", lambda tmp: dict(GOOD, sandbox=str(_random_dir(tmp / "big", api.SANDBOX_NO_BUILD_LIMIT + 4096))),
     "at most"),
    ("far too large to pack",
     lambda tmp: dict(GOOD, sandbox=str(_sparse_dir(tmp / "huge", 21 * api.SANDBOX_NO_BUILD_LIMIT))),
     "leave big files out"),
]


def _file(path: Path, size: int) -> Path:
    path.write_bytes(b"x" * size)
    return path


def _sparse_dir(path: Path, size: int) -> Path:
    path.mkdir()
    with open(path / "huge.bin", "wb") as handle:
        handle.truncate(size)  # no disk used: refused before it is read
    return path


def _random_dir(path: Path, size: int) -> Path:
    path.mkdir()
    (path / "noise.bin").write_bytes(os.urandom(size))  # random bytes do not compress
    return path


@pytest.mark.parametrize("make, words", [c[1:] for c in SANDBOX_CASES], ids=[c[0] for c in SANDBOX_CASES])
def test_bad_sandbox_fails_before_any_request(hook, panda_server, tmp_path, make, words):
    before = sum(panda_server.panda.requests.values())
    with pytest.raises(PandaInputError) as info:
        build_task_params(PrunTask(**make(tmp_path)), hook)
    assert words in str(info.value)
    assert sum(panda_server.panda.requests.values()) == before, "a request was sent"


def test_the_bad_input_catalogue_is_large_enough():
    assert len(BAD_FIELDS) + len(SANDBOX_CASES) >= 15


# --- the sandbox -------------------------------------------------------------------------------


def test_sandbox_is_deterministic_and_leaves_hidden_files_out(tmp_path):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "run.sh").write_text("echo run\n")
    (work / "sub" / "conf.txt").write_text("x=1\n")
    (work / ".git").mkdir()
    (work / ".git" / "HEAD").write_text("ref\n")
    (work / ".secret").write_text("no\n")
    first = Path(pack_sandbox(work, target_dir=str(tmp_path)))
    os.utime(work / "run.sh", (0, 12345678))  # a new timestamp is the same sandbox
    second = Path(pack_sandbox(work, target_dir=str(tmp_path)))
    assert first.read_bytes() == second.read_bytes() and first.name != second.name
    assert first.name.startswith("jobO.") and first.name.endswith(".tar.gz")
    import tarfile

    with tarfile.open(first) as tar:
        assert sorted(tar.getnames()) == ["run.sh", "sub/conf.txt"]
    assert gzip.decompress(first.read_bytes())  # a gzip file, whose trailer carries the CRC put_file checks


def test_sandbox_uploaded_once_and_reused(hook, panda_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("echo sandbox\n")
    builder = PrunTask(exec="sh run.sh", out_ds="user.alice.sbx", sandbox=str(work))
    first = build_task_params(builder, hook)
    second = build_task_params(builder, hook)
    archive = next(i["value"][3:] for i in first["jobParameters"] if i["value"].startswith("-a "))
    assert archive.startswith("jobO.") and archive in panda_server.panda.handlers.cache
    assert second["jobParameters"] == first["jobParameters"]  # the server's identical copy is reused
    assert first["sourceURL"] == panda_server.url  # no cache_url in the connection: the server holds it
    (work / "run.sh").write_text("echo changed\n")
    third = build_task_params(builder, hook)
    assert third["jobParameters"] != first["jobParameters"]


# --- the operator and the decorator --------------------------------------------------------------


@pytest.fixture
def _conn(conn_env):
    conn_env()


def _rendered_fields(run, task_id: str) -> dict[str, Any]:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(RTIF).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()
        return row.rendered_fields


def test_operator_submits_a_templated_builder_with_a_sandbox(_conn, panda_server, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("echo from the sandbox\n")
    body = f"""
    from airflow_provider_panda.builder import PrunTask
    SubmitTaskOperator(task_id="submit", poll_interval=0.05, panda_task=PrunTask(
        exec="sh run.sh %RNDM:5", out_ds="user.alice.builder.{{{{ ti.task_id }}}}.{{{{ ts_nodash }}}}{uuid4().hex[:6]}",
        outputs=["result.json"], n_events=4, n_events_per_job=2, sandbox={str(work)!r}, site="{{{{ 'TEST_SITE' }}}}",
        vo="atlas"))
    """
    run = run_dag(body)
    assert run.states == {"submit": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name.startswith("user.alice.builder.submit.")]
    assert task.status == "done" and task.name.endswith("/") and "{{" not in task.name
    assert task.params["site"] == "TEST_SITE" and task.params["nEventsPerJob"] == 2
    assert task.params["cliParams"].startswith('prun --exec "sh run.sh %RNDM:5" --outDS user.alice.builder.submit.')
    archive = next(i["value"][3:] for i in task.params["jobParameters"] if i["value"].startswith("-a "))
    assert archive in panda_server.panda.handlers.cache
    shown = _rendered_fields(run, "submit")["panda_task"]  # the UI shows the rendered fields as JSON
    assert shown["out_ds"] == task.name[:-1] and shown["outputs"] == ["result.json"]


def test_operator_takes_the_builder_as_a_dict(_conn, panda_server):
    fields = {"exec": "echo dict", "out_ds": "user.alice.dictform.{{ ts_nodash }}", "n_jobs": "{{ 1 + 1 }}"}
    run = run_dag(f"SubmitTaskOperator(task_id='submit', poll_interval=0.05, panda_task={fields!r})")
    assert run.states == {"submit": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name.startswith("user.alice.dictform.")]
    assert task.params["noInput"] is True and task.params["nEvents"] == 2


def test_operator_needs_exactly_one_description():
    from airflow_provider_panda.operators import SubmitTaskOperator

    with pytest.raises(PandaInputError, match="either panda_task .a PrunTask. or task_params"):
        SubmitTaskOperator(task_id="neither")
    with pytest.raises(PandaInputError, match="either panda_task .a PrunTask. or task_params"):
        SubmitTaskOperator(task_id="both", task_params={"taskName": "x"}, panda_task=PrunTask(**GOOD))
    with pytest.raises(PandaInputError, match="n_jobs"):
        SubmitTaskOperator(task_id="bad", panda_task=dict(GOOD, n_jobs=0))


def test_bad_rendered_name_fails_the_task_before_any_request(_conn, panda_server):
    before = panda_server.panda.requests["task/submit"]
    run = run_dag("SubmitTaskOperator(task_id='submit', panda_task={'exec': 'echo', 'out_ds': '{{ \"no.prefix\" }}'})")
    assert run.states == {"submit": "failed"}
    assert panda_server.panda.requests["task/submit"] == before


def test_decorator_submits_the_builder_the_function_returns(_conn, panda_server):
    tag = uuid4().hex[:8]
    body = """
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    @task.panda(poll_interval=0.05)
    def simulate(seed: int, ti=None) -> PrunTask:
        return PrunTask(exec=f"gen --seed {seed} %RNDM:1", out_ds=f"user.alice.deco.$tag.{ti.task_id}", n_jobs=3,
                        outputs=["{{ 'evt' }}.root"])

    @task.panda(poll_interval=0.05)
    def raw():
        return {"taskName": "user.alice.deco_raw.$tag", "noInput": True, "nEvents": 1, "nEventsPerJob": 1,
                "jobParameters": [{"type": "constant", "value": "echo raw"}]}

    simulate(7) >> raw()
    """
    run = run_dag(body, tag=tag)
    assert run.states == {"simulate": "success", "raw": "success"}
    [task] = [t for t in panda_server.sim.tasks.values() if t.name == f"user.alice.deco.{tag}.simulate/"]
    assert task.status == "done" and run.xcom("simulate") == task.task_id
    assert task.params["cliParams"].startswith('prun --exec "gen --seed 7 %RNDM:1"')
    assert task.params["nEvents"] == 3 and "user.alice.$JEDITASKID._${SN/P}.evt.root" in json.dumps(task.params)
    assert _rendered_fields(run, "simulate")["panda_task"]["outputs"] == ["evt.root"]  # rendered, shown as JSON
    assert [t.name for t in panda_server.sim.tasks.values() if t.name == f"user.alice.deco_raw.{tag}"]


def test_decorator_bad_description_fails_before_any_request(_conn, panda_server):
    before = panda_server.panda.requests["task/submit"]
    body = """
    from airflow.sdk import task

    @task.panda
    def bad():
        return {"exec": "cat %IN", "out_ds": "user.alice.deco_bad"}

    bad()
    """
    run = run_dag(body)
    assert run.states == {"bad": "failed"}
    assert panda_server.panda.requests["task/submit"] == before


def test_operator_takes_builders_from_an_upstream_task_and_maps_over_them(_conn, panda_server):
    tag = uuid4().hex[:8]
    body = """
    from airflow.sdk import task
    from airflow_provider_panda.builder import PrunTask

    @task
    def one():
        return PrunTask(exec="echo one", out_ds="user.alice.up.$tag.one").to_dict()

    @task
    def many():
        return [{"exec": f"echo {i}", "out_ds": f"user.alice.up.$tag.m{i}", "n_jobs": i + 1} for i in range(3)]

    SubmitTaskOperator(task_id="single", panda_task=one(), poll_interval=0.05)
    SubmitTaskOperator.partial(task_id="mapped", poll_interval=0.05).expand(panda_task=many())
    """
    run_dag(body, tag=tag)
    names = sorted(t.name for t in panda_server.sim.tasks.values() if f".up.{tag}." in t.name)
    assert names == [f"user.alice.up.{tag}.{n}/" for n in ("m0", "m1", "m2", "one")]
    assert all(t.status == "done" for t in panda_server.sim.tasks.values() if f".up.{tag}." in t.name)


@pytest.mark.parametrize("dag_id, tag", [("panda_submit_and_wait", "demo"), ("panda_auto_retry", "flaky"),
                                         ("panda_file_recovery", "lost"), ("panda_timeout_kill", "slow")])
def test_example_dags_describe_their_tasks_with_the_builder(monkeypatch, dag_id, tag):
    """The examples submit PrunTasks whose rendered names carry the run and the tag the local server reads."""
    from datetime import datetime
    from types import SimpleNamespace

    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag

    from airflow_provider_panda.operators import SubmitTaskOperator

    examples = Path(__file__).resolve().parent.parent / "example_dags"
    monkeypatch.syspath_prepend(str(examples))
    bag = DagBag(dag_folder=str(examples / f"{dag_id}.py"))
    assert not bag.import_errors
    dag = bag.dags[dag_id]
    submits = [t for t in dag.tasks if isinstance(t, SubmitTaskOperator)]
    assert submits and all(isinstance(t.panda_task, PrunTask) and t.task_params is None for t in submits)
    for op in submits:
        context = {"params": dict(dag.params), "dag": dag, "ti": SimpleNamespace(task_id=op.task_id),
                   "dag_run": SimpleNamespace(run_after=datetime(2026, 11, 29, 1, 2, 3, 456789))}
        params = PrunTask.from_dict(op.panda_task.resolve(context)).to_params(sandbox_name=None)
        assert params["taskName"] == f"user.alice.airflow.{dag_id}.{op.task_id}.{tag}.20261129T010203456789/"
        assert params["site"] == "TEST_SITE" and params["nEvents"] == 10 and params["nEventsPerJob"] == 5


def test_the_old_names_still_work_and_say_the_new_ones():
    """``task=`` (now ``panda_task=``) and the old module paths keep a DAG written for 0.1 parsing."""
    from airflow_provider_panda.operators import KillTaskOperator, SubmitTaskOperator

    with pytest.warns(DeprecationWarning, match=r"task=...\) is deprecated: use panda_task"):
        op = SubmitTaskOperator(task_id="old", task=PrunTask(**GOOD))
    assert isinstance(op.panda_task, PrunTask)
    with pytest.warns(DeprecationWarning, match="use wait_for_completion"):
        kill = KillTaskOperator(task_id="kill", jedi_task_id=1, wait_for_termination=True)
    assert kill.wait_for_completion is True
    with pytest.raises(PandaInputError, match="not both"):
        KillTaskOperator(task_id="both", jedi_task_id=1, wait_for_termination=True, wait_for_completion=True)


def test_arguments_without_effect_warn_at_parse_time():
    from airflow_provider_panda.operators import FileRecoveryOperator, KillTaskOperator, RetryTaskOperator

    with pytest.warns(UserWarning, match="RetryTaskOperator: no effect from cancel_on_kill=True here"):
        assert RetryTaskOperator(task_id="r", jedi_task_id=1, cancel_on_kill=True).cancel_on_kill is False
    with pytest.warns(UserWarning, match="no effect from on_timeout='kill' here"):
        assert KillTaskOperator(task_id="k", jedi_task_id=1, on_timeout="kill").on_timeout == "fail"
    with pytest.warns(UserWarning, match="no effect from deferrable=True here"):
        FileRecoveryOperator(task_id="f", jedi_task_id=1, deferrable=True)
