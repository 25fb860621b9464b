"""Builder tasks on the real panda-server + JEDI (``REAL_PANDA=1``): a no-input task, one with a sandbox,
one with merged outputs and one writing its input list to a file, submitted by
SubmitTaskOperator(panda_task=PrunTask(...)) in real DAG runs; a stand-in pilot takes their jobs (checking
the sandbox and the options reached them) and ends them, and JEDI brings the tasks to ``done``.

What the harness cannot show, and why:

- merge jobs: JEDI sets merging up (the jobs write unmerged ``panda.um.`` files, and the task has its
  merge step) and the task ends ``done``, but no merge job is made. The server's closer starts merging
  (``updateUnmergedDatasets``) when a job's destination datasets close, and the harness's
  ``SetupperDummyPlugin`` registers none in the server's ``Datasets`` table (the closer logs "Not found :
  panda.um.<out_ds>_out.root.<n>.<n>").
- an input list of files: the harness has no storage, and its DDM (``ddm_client.LocalDDMClient``) knows no
  dataset (JEDI's ContentsFeeder asks ``getFilesInDataset``, its broker ``getAvailableFiles``), so a task
  with ``in_ds`` cannot run here; the input list task has no input dataset, and shows that PanDA takes
  the option and hands it to the job."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from airflow_runs import run_dag
from backends import N_JOBS, RealBackend

from airflow_provider_panda.hooks.panda import PandaHook

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")


@pytest.fixture
def backend(real_server, monkeypatch):
    backend = RealBackend(real_server)
    monkeypatch.setenv("AIRFLOW_CONN_PANDA_DEFAULT", json.dumps(backend.connection()))
    return backend


def pilot_for(backend: RealBackend, task_name: str) -> threading.Thread:
    """Find the task by name once it exists, take its jobs (kept in ``.jobs``) and end them finished."""
    errors: list[BaseException] = []
    jobs: list[dict] = []

    def work() -> None:
        try:
            hook = PandaHook()
            deadline = time.monotonic() + backend.timeout
            task_id = None
            while task_id is None and time.monotonic() < deadline:
                tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
                task_id = next((t for t, info in tasks.items() if info["taskName"] == task_name), None)
                time.sleep(1)
            while len(jobs) < N_JOBS and time.monotonic() < deadline:
                taken = backend.pilot.acquire(task_id)
                for job in taken:
                    jobs.append(job)
                    backend.pilot.report(job, succeed=True)
                if not taken:
                    time.sleep(1)
            if len(jobs) < N_JOBS:
                raise TimeoutError(f"only {len(jobs)} of {N_JOBS} jobs of {task_name} were acquired")
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.jobs = jobs  # type: ignore[attr-defined]
    thread.start()
    return thread


def builder_source(out_ds: str, exec: str = "echo hello from the builder", **fields: object) -> str:
    """A SubmitTaskOperator with a PrunTask for the real server's test queue (VO wlcg, as the contract's)."""
    extra = "".join(f", {k}={v!r}" for k, v in fields.items())
    return ("from airflow_provider_panda.builder import PrunTask\n"
            f"SubmitTaskOperator(task_id='submit', deferrable=True, poll_interval=1, panda_task=PrunTask(\n"
            f"    exec={exec!r}, out_ds={out_ds!r}, n_events={N_JOBS}, n_events_per_job=1,\n"
            f"    site='TEST_SITE', cloud='WORLD', vo='wlcg', memory=2000, max_attempt=1{extra}))\n")


def test_real_builder_task_without_input_runs_to_done(backend):
    out_ds = f"user.alice.builder.noinput.{uuid.uuid4().hex[:10]}"
    pilot = pilot_for(backend, out_ds + "/")
    run = run_dag(builder_source(out_ds))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}, pilot.errors
    task_id = run.xcom("submit")
    assert PandaHook().get_task_status(task_id) == "done"
    params = PandaHook().get_task_params(task_id)
    assert params["taskName"] == out_ds + "/" and params["cliParams"].startswith("prun --exec ")


def test_real_builder_task_with_a_sandbox_runs_to_done(backend, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("echo hello from the sandbox\n")
    out_ds = f"user.alice.builder.sandbox.{uuid.uuid4().hex[:10]}"
    pilot = pilot_for(backend, out_ds + "/")
    run = run_dag(builder_source(out_ds, exec="sh run.sh", sandbox=str(work)))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}, pilot.errors
    task_id = run.xcom("submit")
    assert PandaHook().get_task_status(task_id) == "done"
    params = PandaHook().get_task_params(task_id)
    archive = next(i["value"][3:] for i in params["jobParameters"] if i["value"].startswith("-a "))
    assert archive.startswith("jobO.") and params["sourceURL"] == backend.url
    assert all(archive in json.dumps(job) for job in pilot.jobs), "the jobs do not name the sandbox"


FINAL = ("done", "finished", "failed", "broken", "aborted", "exhausted")
#: The merge step's transformation: JEDI sets it for VO atlas only, and the harness's VO is wlcg
RUN_MERGE = "https://pandaserver-doma.cern.ch/trf/user/runMerge-00-00-02"


def pilot_until_final(backend: RealBackend, task_name: str) -> threading.Thread:
    """Like pilot_for, but keeps taking the task's jobs (merge jobs come once the others are done) until
    the task ends; the jobs taken are kept in ``.jobs``, the task's last status in ``.status``."""
    errors: list[BaseException] = []
    jobs: list[dict] = []
    status: list[str] = []

    def work() -> None:
        try:
            hook = PandaHook()
            deadline = time.monotonic() + 2 * backend.timeout
            task_id = None
            while task_id is None and time.monotonic() < deadline:
                tasks = hook.get_tasks_modified_since("2000-01-01 00:00:00")
                task_id = next((t for t, info in tasks.items() if info["taskName"] == task_name), None)
                time.sleep(1)
            while time.monotonic() < deadline:
                taken = backend.pilot.acquire(task_id)
                for job in taken:
                    jobs.append(job)
                    backend.pilot.report(job, succeed=True)
                status[:] = [hook.get_task_status(task_id)]
                if status[0] in FINAL:
                    return
                if not taken:
                    time.sleep(1)
            raise TimeoutError(f"{task_name} is still {status} after {len(jobs)} jobs")
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.jobs = jobs  # type: ignore[attr-defined]
    thread.status = status  # type: ignore[attr-defined]
    thread.start()
    return thread


def test_real_builder_task_with_merged_outputs_runs_to_done(backend, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text("echo hello > out.root\n")
    out_ds = f"user.alice.builder.merge.{uuid.uuid4().hex[:10]}"
    pilot = pilot_until_final(backend, out_ds + "/")
    run = run_dag(builder_source(out_ds, exec="sh run.sh", sandbox=str(work), outputs=["out.root"],
                                 merge_output=True, merge_log=True, merge_trans_path=RUN_MERGE))
    pilot.join(2 * backend.timeout)
    assert not pilot.errors and run.states == {"submit": "success"}, (pilot.errors, pilot.status)
    task_id = run.xcom("submit")
    assert PandaHook().get_task_status(task_id) == "done"
    params = PandaHook().get_task_params(task_id)
    assert params["mergeOutput"] is True and "${TRN_OUTPUT:OUTPUT}" in params["mergeSpec"]["jobParameters"]
    assert params["mergeSpec"]["transPath"] == RUN_MERGE
    # JEDI set merging up: the jobs write unmerged files, which merge jobs read
    runs = [job for job in pilot.jobs if job.get("processingType") != "pmerge"]
    outputs = [name for job in runs for name in str(job["outFiles"]).split(",")]
    assert runs and outputs and all(name.startswith("panda.um.") for name in outputs), outputs
    # merge jobs: none on this harness (the module's doc says why); where there are, they get the sandbox
    archive = next(i["value"][3:] for i in params["jobParameters"] if i["value"].startswith("-a "))
    merges = [job for job in pilot.jobs if job.get("processingType") == "pmerge"]
    assert all(archive in json.dumps(job) for job in merges), "the merge jobs do not name the sandbox"


def test_real_builder_task_writing_its_input_list_runs_to_done(backend):
    out_ds = f"user.alice.builder.txt.{uuid.uuid4().hex[:10]}"
    pilot = pilot_for(backend, out_ds + "/")
    run = run_dag(builder_source(out_ds, exec="python ana.py --files in.txt", write_input_to_txt="IN:in.txt",
                                 max_files_per_job=500))
    pilot.join(5)
    assert not pilot.errors and run.states == {"submit": "success"}, pilot.errors
    task_id = run.xcom("submit")
    assert PandaHook().get_task_status(task_id) == "done"
    params = PandaHook().get_task_params(task_id)
    assert params["nMaxFilesPerJob"] == 500
    assert all("--writeInputToTxt IN:in.txt" in json.dumps(job) for job in pilot.jobs), \
        "the jobs are not told to write their input list"
