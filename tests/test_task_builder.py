"""The typed task builder (``airflow_provider_panda.builder``): its map equals what prun (panda-client 2.2.0)
builds for the same options; bad inputs fail clearly before any request, where prun refuses too; the
operator and the decorator submit builder tasks, with their sandbox, against the local server."""

from __future__ import annotations

import gzip
import json
import os
import warnings
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from airflow_runs import run_dag
from prun_witness import CACHE, SERVER, athena_env, make_case, prun_params, witness

from airflow_provider_panda import api
from airflow_provider_panda.builder import PrunTask, SecondaryInput, build_task_params, pack_sandbox
from airflow_provider_panda.exceptions import PandaInputError

SANDBOX = "jobO.00000000-0000-0000-0000-000000000000.tar.gz"

#: What differs between prun's map and the builder's for the same options and why. prun in dry mode
#: makes no sandbox, so where it names the archive it writes None: "-a None" in jobParameters and in
#: mergeSpec.jobParameters, buildSpec.archiveName, fixedSandbox. Nothing else is left out of the
#: comparison: osInfo is platform.platform() of the submitting host in both (the same host here),
#: sourceURL is the server or cache URL both are given, and cliParams is the same prun command line (the
#: builder's prun_args are asserted equal). prun reads the release of --useAthenaPackages, $CMTCONFIG and
#: $ALRB_USER_PLATFORM from the shell: the witness runs in a shell without them (prun_witness.SHELL_ONLY),
#: and with an asetup'd release (athena_env) where a task uses Athena packages.
ENVIRONMENT_DEPENDENT = ("jobParameters[-a <sandbox>]", "mergeSpec.jobParameters[-a <sandbox>]",
                         "buildSpec.archiveName", "fixedSandbox")


def normalise_sandbox(params: dict[str, Any], name: str) -> dict[str, Any]:
    """Put the builder's sandbox name where prun's dry run writes None (ENVIRONMENT_DEPENDENT)."""
    params = json.loads(json.dumps(params))
    for item in params["jobParameters"]:
        if item.get("value") == "-a None":
            item["value"] = f"-a {name}"
    if "buildSpec" in params and params["buildSpec"].get("archiveName") is None:
        params["buildSpec"]["archiveName"] = name
    if "mergeSpec" in params:
        params["mergeSpec"]["jobParameters"] = params["mergeSpec"]["jobParameters"].replace("-a None ", f"-a {name} ")
    if "fixedSandbox" in params and params["fixedSandbox"] is None:
        params["fixedSandbox"] = name
    return params


def shell_of(fields: dict[str, Any]) -> dict[str, str] | None:
    """The shell prun runs in for these fields: a set-up release for a task using Athena packages."""
    if not fields.get("use_athena_packages"):
        return None
    project, release = sorted(fields["athena_tag"].split(","), key=lambda i: i[0].isdigit())
    return athena_env(project, release, fields["cmt_config"])


def builder_map(fields: dict[str, Any]) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what prun warns about, the builder warns about (tested in the unit layer)
        builder = PrunTask(**fields)
    return builder.to_params(source_url=SERVER if builder.vo else CACHE, sandbox_name=SANDBOX)


A_DS = ("mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS."
        "e8514_s4162_r14622_p6026")
CMT = "x86_64-el9-gcc13-opt"
RUN_MERGE = "https://pandaserver-doma.cern.ch/trf/user/runMerge-00-00-02"

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
    ("jobs over events of files", dict(exec="ana %IN --skip %SKIPEVENTS --n %MAXEVENTS", out_ds="user.alice.evf",
                                       in_ds="d.a", n_events_per_job=500, n_events_per_file=2000, n_jobs=10),
     ["--exec", "ana %IN --skip %SKIPEVENTS --n %MAXEVENTS", "--outDS", "user.alice.evf", "--inDS", "d.a",
      "--nJobs", "10", "--nEventsPerJob", "500", "--nEventsPerFile", "2000", "--noBuild"]),
    ("vo, label, attempts", dict(exec="echo vo", out_ds="user.alice.vo", vo="wlcg", prod_source_label="test",
                                 max_attempt=5, unique_name=False),
     ["--exec", "echo vo", "--outDS", "user.alice.vo", "--maxAttempt", "5", "--vo", "wlcg", "--prodSourceLabel",
      "test", "--noBuild", "--allowTaskDuplication"]),
    ("build step", dict(exec="./a.out", out_ds="user.alice.build", build=True, sandbox="."),
     ["--exec", "./a.out", "--outDS", "user.alice.build"]),
    # --- the release: --athenaTag, --cmtConfig, --useAthenaPackages
    ("athena tag with inputs and outputs",
     dict(exec="ana.sh %IN", out_ds="user.alice.ab", in_ds=A_DS, outputs=["hist.root", "tree:tree.root"],
          athena_tag="AnalysisBase,24.2.35", cmt_config=CMT),
     ["--exec", "ana.sh %IN", "--outDS", "user.alice.ab", "--inDS", A_DS, "--outputs", "hist.root,tree:tree.root",
      "--athenaTag", "AnalysisBase,24.2.35", "--cmtConfig", CMT, "--noBuild"]),
    ("athena tag with a build step",
     dict(exec="athena.py jo.py", out_ds="user.alice.aa", in_ds="d.a", outputs=["out.pool.root"], build=True,
          sandbox=".", athena_tag="21.2.170,AthAnalysis", cmt_config="x86_64-centos7-gcc8-opt", n_events_per_job=500),
     ["--exec", "athena.py jo.py", "--outDS", "user.alice.aa", "--inDS", "d.a", "--outputs", "out.pool.root",
      "--nEventsPerJob", "500", "--athenaTag", "21.2.170,AthAnalysis", "--cmtConfig", "x86_64-centos7-gcc8-opt"]),
    ("athena tag of a cache and a nightly",
     dict(exec="run.sh", out_ds="user.alice.nightly", athena_tag="Athena,main,latest", cmt_config=CMT),
     ["--exec", "run.sh", "--outDS", "user.alice.nightly", "--athenaTag", "Athena,main,latest", "--cmtConfig", CMT,
      "--noBuild"]),
    ("athena tag of AthAnalysis master",
     dict(exec="run.sh", out_ds="user.alice.master", athena_tag="AthAnalysis,master", cmt_config=CMT),
     ["--exec", "run.sh", "--outDS", "user.alice.master", "--athenaTag", "AthAnalysis,master", "--cmtConfig", CMT,
      "--noBuild"]),
    ("a platform only", dict(exec="run.sh", out_ds="user.alice.cmt", cmt_config=CMT, architecture="@el9"),
     ["--exec", "run.sh", "--outDS", "user.alice.cmt", "--architecture", "@el9", "--cmtConfig", CMT, "--noBuild"]),
    ("architecture with a platform and a GPU",
     dict(exec="run.sh", out_ds="user.alice.gpu", architecture=CMT + "@el9&nvidia"),
     ["--exec", "run.sh", "--outDS", "user.alice.gpu", "--architecture", CMT + "@el9&nvidia", "--noBuild"]),
    ("architecture as JSON", dict(exec="run.sh", out_ds="user.alice.json", cmt_config=CMT,
                                  architecture='{"gpu_spec": {"model": ".*A100.*"}}'),
     ["--exec", "run.sh", "--outDS", "user.alice.json", "--architecture", '{"gpu_spec": {"model": ".*A100.*"}}',
      "--cmtConfig", CMT, "--noBuild"]),
    ("athena packages", dict(exec="athena.py MyAlg/jo.py %IN", out_ds="user.alice.pkg", in_ds="d.a", sandbox=".",
                             use_athena_packages=True, athena_tag="Athena,24.0.10", cmt_config=CMT,
                             outputs=["out.root"]),
     ["--exec", "athena.py MyAlg/jo.py %IN", "--outDS", "user.alice.pkg", "--inDS", "d.a", "--outputs", "out.root",
      "--useAthenaPackages", "--athenaTag", "Athena,24.0.10", "--cmtConfig", CMT, "--noBuild"]),
    ("athena packages built on the grid with merging",
     dict(exec="athena.py jo.py %IN", out_ds="user.alice.pkgb", in_ds="d.a", sandbox=".", build=True,
          use_athena_packages=True, athena_tag="AnalysisBase,24.2.35", cmt_config=CMT, outputs=["out.root"],
          merge_output=True),
     ["--exec", "athena.py jo.py %IN", "--outDS", "user.alice.pkgb", "--inDS", "d.a", "--outputs", "out.root",
      "--useAthenaPackages", "--athenaTag", "AnalysisBase,24.2.35", "--cmtConfig", CMT, "--mergeOutput"]),
    # --- inputs
    ("input list in a text file, more files per job",
     dict(exec="python ana.py --files in.txt", out_ds="user.alice.txt", in_ds="d.a", outputs=["hist.root"],
          write_input_to_txt="IN:in.txt", max_files_per_job=500, n_files_per_job=300),
     ["--exec", "python ana.py --files in.txt", "--outDS", "user.alice.txt", "--inDS", "d.a", "--outputs",
      "hist.root", "--nFilesPerJob", "300", "--writeInputToTxt", "IN:in.txt", "--maxNFilesPerJob", "500",
      "--noBuild"]),
    ("input lists of two streams", dict(exec="mix in.txt bkg.txt", out_ds="user.alice.txt2", in_ds="d.a",
                                        secondary=[SecondaryInput("BKG", "d.b", 3)],
                                        write_input_to_txt={"IN": "in.txt", "BKG": "bkg.txt"}),
     ["--exec", "mix in.txt bkg.txt", "--outDS", "user.alice.txt2", "--inDS", "d.a", "--secondaryDSs", "BKG:3:d.b",
      "--writeInputToTxt", "IN:in.txt,BKG:bkg.txt", "--noBuild"]),
    ("input list with placeholders' percent", dict(exec="run in.txt", out_ds="user.alice.txt3", in_ds="d.a",
                                                   write_input_to_txt="%IN:in.txt"),
     ["--exec", "run in.txt", "--outDS", "user.alice.txt3", "--inDS", "d.a", "--writeInputToTxt", "%IN:in.txt",
      "--noBuild"]),
    ("files per job over the ceiling", dict(exec="ana %IN", out_ds="user.alice.ceil", in_ds="d.a",
                                            n_files_per_job=300, n_jobs=2),
     ["--exec", "ana %IN", "--outDS", "user.alice.ceil", "--inDS", "d.a", "--nFilesPerJob", "300", "--nJobs", "2",
      "--noBuild"]),
    ("size per job", dict(exec="ana %IN", out_ds="user.alice.gb", in_ds="d.a", n_gb_per_job=10),
     ["--exec", "ana %IN", "--outDS", "user.alice.gb", "--inDS", "d.a", "--nGBPerJob", "10", "--noBuild"]),
    ("size per job MAX with files per job", dict(exec="ana %IN", out_ds="user.alice.gbmax", in_ds="d.a",
                                                 n_gb_per_job="MAX", n_files_per_job=10),
     ["--exec", "ana %IN", "--outDS", "user.alice.gbmax", "--inDS", "d.a", "--nFilesPerJob", "10", "--nGBPerJob",
      "MAX", "--noBuild"]),
    ("file selection", dict(exec="ana %IN", out_ds="user.alice.sel", in_ds="d.a", match="*.root.*",
                            anti_match="*_tid001*", n_skip_files=3),
     ["--exec", "ana %IN", "--outDS", "user.alice.sel", "--inDS", "d.a", "--nSkipFiles", "3", "--match", "*.root.*",
      "--antiMatch", "*_tid001*", "--noBuild"]),
    ("input flags", dict(exec="ana %IN", out_ds="user.alice.flags", in_ds="d.a", force_staged=True,
                         skip_empty_input=True, avoid_vp=True),
     ["--exec", "ana %IN", "--outDS", "user.alice.flags", "--inDS", "d.a", "--forceStaged", "--skipEmptyInput",
      "--avoidVP", "--noBuild"]),
    ("scoped secondary datasets", dict(exec="mix %IN %IN2 %BKG", out_ds="user.alice.sec", in_ds=A_DS,
                                       secondary=[SecondaryInput("IN2", "mc23_13p6TeV:mc23.x.DAOD", 2),
                                                  SecondaryInput("BKG", "data:bkg", 1, pattern="*.root", n_skip=2),
                                                  SecondaryInput("MB", "mb.y", 1, n_skip=5)]),
     ["--exec", "mix %IN %IN2 %BKG", "--outDS", "user.alice.sec", "--inDS", A_DS, "--secondaryDSs",
      "IN2#2#mc23_13p6TeV:mc23.x.DAOD,BKG#1#data:bkg#*.root#2,MB:1:mb.y::5", "--noBuild"]),
    ("a secondary stream only", dict(exec="ana %BKG", out_ds="user.alice.sec2",
                                     secondary=[SecondaryInput("BKG", "d.b", 2)]),
     ["--exec", "ana %BKG", "--outDS", "user.alice.sec2", "--secondaryDSs", "BKG:2:d.b", "--noBuild"]),
    # --- outputs
    ("merged outputs", dict(exec="ana %IN", out_ds="user.alice.merge", in_ds="d.a", outputs=["hist.root"],
                            merge_output=True, n_files_per_job=5),
     ["--exec", "ana %IN", "--outDS", "user.alice.merge", "--inDS", "d.a", "--outputs", "hist.root",
      "--nFilesPerJob", "5", "--mergeOutput", "--noBuild"]),
    ("merge script, log and size in a container",
     dict(exec="python ana.py %IN", out_ds="user.alice.mergec", in_ds=A_DS, outputs=["out.root"],
          container_image="docker://gitlab-registry.cern.ch/atlas/athena/analysisbase:24.2.35",
          merge_script="hadd -f %OUT %IN", merge_log=True, merge_single_file=True, n_gb_per_merge_job=10),
     ["--exec", "python ana.py %IN", "--outDS", "user.alice.mergec", "--inDS", A_DS, "--outputs", "out.root",
      "--containerImage", "docker://gitlab-registry.cern.ch/atlas/athena/analysisbase:24.2.35", "--mergeScript",
      "hadd -f %OUT %IN", "--mergeLog", "--mergeSingleFile", "--nGBPerMergeJob", "10"]),
    ("merge with a build step", dict(exec="./ana %IN", out_ds="user.alice.mergeb", in_ds="d.a", build=True,
                                     sandbox=".", outputs=["o.root"], merge_output=True, n_gb_per_merge_job="MAX"),
     ["--exec", "./ana %IN", "--outDS", "user.alice.mergeb", "--inDS", "d.a", "--outputs", "o.root",
      "--mergeOutput", "--nGBPerMergeJob", "MAX"]),
    ("merge with its transformation", dict(exec="echo m > o.root", out_ds="user.alice.merget", outputs=["o.root"],
                                           merge_output=True, merge_trans_path=RUN_MERGE, n_jobs=2),
     ["--exec", "echo m > o.root", "--outDS", "user.alice.merget", "--outputs", "o.root", "--nJobs", "2",
      "--mergeOutput", "--mergeTransPath", RUN_MERGE, "--noBuild"]),
    ("outputs allowed missing, to a storage element",
     dict(exec="run %IN", out_ds="user.alice.ano", in_ds="d.a", outputs=["out.root", "hist:h*.root", "regex|x.*"],
          allow_no_output=["hist.*", "x", ".*out.root"], dest_se="CERN-PROD_SCRATCHDISK"),
     ["--exec", "run %IN", "--outDS", "user.alice.ano", "--inDS", "d.a", "--outputs",
      "out.root,hist:h*.root,regex|x.*", "--allowNoOutput", "hist.*,x,.*out.root", "--destSE",
      "CERN-PROD_SCRATCHDISK", "--noBuild"]),
    ("official group outputs", dict(exec="run %IN", out_ds="group.phys-higgs.ntup.v3", in_ds="d.a",
                                    outputs=["ntup.root"], official=True, working_group="phys-higgs",
                                    merge_output=True),
     ["--exec", "run %IN", "--outDS", "group.phys-higgs.ntup.v3", "--inDS", "d.a", "--outputs", "ntup.root",
      "--workingGroup", "phys-higgs", "--mergeOutput", "--official", "--noBuild"]),
    # --- submission
    ("submission flags", dict(exec="echo flags", out_ds="user.alice.sub", no_email=True, disable_auto_retry=True,
                              os_matching=True, use_new_code=True, sandbox="."),
     ["--exec", "echo flags", "--outDS", "user.alice.sub", "--noEmail", "--disableAutoRetry", "--osMatching",
      "--useNewCode", "--noBuild"]),
    ("site AUTO", dict(exec="echo auto", out_ds="user.alice.auto", site="AUTO"),
     ["--exec", "echo auto", "--outDS", "user.alice.auto", "--site", "AUTO", "--noBuild"]),
    ("sites then AUTO", dict(exec="echo a", out_ds="user.alice.auto2", site="ANALY_A,ANALY_B,AUTO"),
     ["--exec", "echo a", "--outDS", "user.alice.auto2", "--site", "ANALY_A,ANALY_B,AUTO", "--noBuild"]),
    ("excluded sites with wildcards", dict(exec="echo x", out_ds="user.alice.excl",
                                           excluded_sites=["ANALY_BNL*", "CERN*,ANALY_SLAC"]),
     ["--exec", "echo x", "--outDS", "user.alice.excl", "--excludedSite", "ANALY_BNL*,CERN*,ANALY_SLAC",
      "--noBuild"]),
    ("attempts over prun's limit", dict(exec="echo x", out_ds="user.alice.att", max_attempt=60),
     ["--exec", "echo x", "--outDS", "user.alice.att", "--maxAttempt", "60", "--noBuild"]),
    ("a label with a digit", dict(exec="echo x", out_ds="user.alice.rc", prod_source_label="rc_test2"),
     ["--exec", "echo x", "--outDS", "user.alice.rc", "--prodSourceLabel", "rc_test2", "--noBuild"]),
    # --- exec: shell text as users write it
    ("percent in shell text", dict(exec="ana %IN > log_$(date +%FT%T).txt; printf '%s\\n' done", out_ds="user.alice.pc",
                                   in_ds="d.a"),
     ["--exec", "ana %IN > log_$(date +%FT%T).txt; printf '%s\\n' done", "--outDS", "user.alice.pc", "--inDS", "d.a",
      "--noBuild"]),
    ("bash array length", dict(exec='f=(${IN//,/ }); echo "${#f[@]} files"; ana %IN', out_ds="user.alice.arr",
                               in_ds="d.a"),
     ["--exec", 'f=(${IN//,/ }); echo "${#f[@]} files"; ana %IN', "--outDS", "user.alice.arr", "--inDS", "d.a",
      "--noBuild"]),
    ("a DBRelease", dict(exec="athena.py jo.py %DB:ddo.000001.Atlas.Ideal.DBRelease.v050101:DBRelease-5.1.1.tar.gz",
                         out_ds="user.alice.dbr", athena_tag="AtlasProduction,20.7.9.9",
                         cmt_config="x86_64-slc6-gcc49-opt"),
     ["--exec", "athena.py jo.py %DB:ddo.000001.Atlas.Ideal.DBRelease.v050101:DBRelease-5.1.1.tar.gz", "--outDS",
      "user.alice.dbr", "--athenaTag", "AtlasProduction,20.7.9.9", "--cmtConfig", "x86_64-slc6-gcc49-opt",
      "--noBuild"]),
    ("the latest DBRelease", dict(exec="athena.py %DB:LATEST", out_ds="user.alice.dbl"),
     ["--exec", "athena.py %DB:LATEST", "--outDS", "user.alice.dbl", "--noBuild"]),
    ("options prun ignores without input", dict(exec="cat %IN", out_ds="user.alice.noin", n_files_per_job=4,
                                                match="*.root"),
     ["--exec", "cat %IN", "--outDS", "user.alice.noin", "--nFilesPerJob", "4", "--match", "*.root", "--noBuild"]),
]


def _prefetch() -> None:
    """Ask prun about every command line of this module in one witness run (each still forks alone)."""
    witness([make_case(options, env=shell_of(fields)) for _, fields, options in CASES]
            + [make_case(refused_argv(options)) for _, options, _, _ in REFUSED_BY_PRUN])


@pytest.mark.parametrize("fields, options", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_builder_map_equals_prun(fields, options):
    _prefetch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert PrunTask(**fields).prun_args() == options  # so cliParams is the same command line
    theirs = normalise_sandbox(prun_params(options, env=shell_of(fields)), SANDBOX)
    assert builder_map(fields) == theirs


def test_every_prun_option_of_the_builder_is_compared_with_prun():
    """Each field is set by at least one case above (a new field without a case fails here)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(PrunTask)}
    unset = set(defaults) - {"nickname", "extra", "cloud"}  # no prun option
    unset -= {"input_file_list"}  # a local file: compared in test_a_file_list_read_from_a_file_is_prun_s
    for _, fields, _ in CASES:
        unset -= {k for k, v in fields.items() if v != defaults[k]}
    assert unset == set()


def test_the_witness_sees_a_difference():
    """The comparison can fail: one option more on prun's side is a different map."""
    fields, options = CASES[0][1], CASES[0][2]
    theirs = normalise_sandbox(prun_params([*options, "--memory", "1500"]), SANDBOX)
    assert PrunTask(**fields).to_params(source_url=CACHE, sandbox_name=SANDBOX) != theirs


def test_a_file_list_read_from_a_file_is_prun_s(tmp_path):
    names = tmp_path / "files.txt"
    names.write_text("DAOD_PHYS.1234._000001.pool.root.1\n\n  DAOD_PHYS.1234._000007.pool.root.1  \n")
    fields = dict(exec="ana %IN", out_ds="user.alice.list", in_ds="d.a", input_file_list=str(names))
    options = PrunTask(**fields).prun_args()
    assert options[-3:] == ["--inputFileList", str(names), "--noBuild"]
    theirs = normalise_sandbox(prun_params(options), SANDBOX)
    assert builder_map(fields) == theirs
    [item] = [i for i in theirs["jobParameters"] if i.get("param_type") == "input"]
    assert item["files"] == ["DAOD_PHYS.1234._000001.pool.root.1", "DAOD_PHYS.1234._000007.pool.root.1"]


@pytest.mark.parametrize("names", [["a.root.1", "b.root.1"], '["a.root.1", "b.root.1"]'])
def test_a_file_list_given_as_names_makes_the_same_map_but_for_the_command_line(tmp_path, names):
    """prun reads --inputFileList from a file; names given in the DAG (e.g. an upstream's XCom) make the same
    map, and cliParams records them in place of a file name."""
    (tmp_path / "files.txt").write_text("a.root.1\nb.root.1\n")
    fields = dict(exec="ana %IN", out_ds="user.alice.list2", in_ds="d.a", input_file_list=names)
    ours = builder_map(fields)
    theirs = normalise_sandbox(prun_params([*PrunTask(**fields).prun_args()[:-3], "--inputFileList",
                                            str(tmp_path / "files.txt"), "--noBuild"]), SANDBOX)
    assert ours.pop("cliParams").endswith('--inputFileList a.root.1,b.root.1 --noBuild')
    theirs.pop("cliParams")
    assert ours == theirs


def test_prun_doubles_a_platform_given_alone_and_the_builder_does_not():
    """prun 2.2.0, in a shell without $ALRB_USER_PLATFORM, appends --architecture to itself when it has no
    '@', '#' or '&' part ('x86_64-el9-gcc13-opt' becomes 'x86_64-el9-gcc13-optx86_64-el9-gcc13-opt', which no
    queue matches; on lxplus it becomes 'x86_64-el9-gcc13-opt@el9'): the builder sends the platform once. The
    one place where the builder's map differs from prun's on purpose."""
    fields = dict(exec="run.sh", out_ds="user.alice.arch", architecture=CMT)
    theirs = normalise_sandbox(prun_params(PrunTask(**fields).prun_args()), SANDBOX)
    assert theirs["architecture"] == CMT + CMT
    theirs["architecture"] = CMT
    assert builder_map(fields) == theirs


# --- what prun refuses, the builder refuses before any request -----------------------------------

#: (case id, a prun command line prun refuses, the builder's fields for it, words of the builder's message)
REFUSED_BY_PRUN: list[tuple[str, list[str], dict[str, Any], str]] = [
    ("size and files per job", ["--nGBPerJob", "10", "--nFilesPerJob", "5"], dict(n_gb_per_job=10, n_files_per_job=5),
     "must be used exclusively"),
    ("size and events per job", ["--nGBPerJob", "10", "--nEventsPerJob", "100"],
     dict(n_gb_per_job=10, n_events_per_job=100), "can not be used simultaneously"),
    ("size MAX and events per job", ["--nGBPerJob", "MAX", "--nEventsPerJob", "100"],
     dict(n_gb_per_job="MAX", n_events_per_job=100), "can not be used simultaneously"),
    ("size zero", ["--nGBPerJob", "0"], dict(n_gb_per_job=0), "n_gb_per_job must be a positive integer or 'MAX'"),
    ("size not a number", ["--nGBPerJob", "ten"], dict(n_gb_per_job="ten"), "n_gb_per_job must be a positive"),
    ("merge size zero", ["--mergeOutput", "--nGBPerMergeJob", "0"], dict(merge_output=True, n_gb_per_merge_job=0),
     "n_gb_per_merge_job must be a positive integer or 'MAX'"),
    ("input list without a stream", ["--writeInputToTxt", "in.txt"], dict(write_input_to_txt="in.txt"),
     "must be StreamName:FileName"),
    ("athena tag without a platform", ["--athenaTag", "AnalysisBase,24.2.35"], dict(athena_tag="AnalysisBase,24.2.35"),
     "needs cmt_config"),
    ("athena tag with a word size", ["--athenaTag", "17.2.1,64", "--cmtConfig", CMT],
     dict(athena_tag="17.2.1,64", cmt_config=CMT), "is not supported (prun refuses it)"),
    ("a DBRelease without its file", ["--exec", "athena.py %DB:ddo.x"], dict(exec="athena.py %DB:ddo.x"),
     "must be %DB:<dataset>:<file> or %DB:LATEST"),
    ("an output with two colons", ["--outputs", "a:b:c.root"], dict(outputs=["a:b:c.root"]), "suffix:name"),
    ("an output suffix twice", ["--outputs", "a:x.root,a:y.root"], dict(outputs=["a:x.root", "a:y.root"]),
     "suffix 'a'"),
    ("eleven outputs", ["--outputs", ",".join(f"o{i}.root" for i in range(11))],
     dict(outputs=[f"o{i}.root" for i in range(11)]), "at most 10"),
    ("an output name with '$'", ["--outputs", "out$.root"], dict(outputs=["out$.root"]), "'$'"),
    ("an output name with '/'", ["--outputs", "dir/out.root"], dict(outputs=["dir/out.root"]), "'/'"),
    ("an output container too long", ["--outDS", "user.alice." + "x" * 110, "--outputs", "a" * 20 + ".root"],
     dict(out_ds="user.alice." + "x" * 110, outputs=["a" * 20 + ".root"]), "output container"),
    ("a pattern that is no regular expression", ["--outputs", "o.root", "--allowNoOutput", "o(.root"],
     dict(outputs=["o.root"], allow_no_output=["o(.root"]), "is not a regular expression"),
    ("architecture of broken JSON", ["--architecture", '{"gpu_spec": '], dict(architecture='{"gpu_spec": '),
     "is not JSON"),
]


@pytest.mark.parametrize("options, fields, words", [c[1:] for c in REFUSED_BY_PRUN],
                         ids=[c[0] for c in REFUSED_BY_PRUN])
def test_what_prun_refuses_the_builder_refuses(options, fields, words):
    _prefetch()
    [answer] = witness([make_case(refused_argv(options))])
    assert "params" not in answer, f"prun accepted {refused_argv(options)}"
    with pytest.raises(PandaInputError) as info:
        PrunTask(**{"exec": "ana %IN", "out_ds": "user.alice.refused", "in_ds": "d.a", **fields})
    assert words in str(info.value)


def refused_argv(options: list[str]) -> list[str]:
    """A command line prun would take, with these options added (replacing --exec, --outDS if given)."""
    base = {"--exec": "ana %IN", "--outDS": "user.alice.refused", "--inDS": "d.a"}
    return [x for k, v in base.items() if k not in options for x in (k, v)] + ["--noBuild", *options]


#: (out_ds, official, merged outputs, accepted): prun's check of --outDS before it submits (not made in dry
#: mode; run on its own for user alice, with a production role in phys-higgs)
OUT_DS_RULES = [
    ("user.alice.ana.v1", False, False, True),
    ("user.bob.ana.v1", False, False, True),  # the builder checks the nickname only when it is given
    ("group.phys-higgs.ana.v1", False, False, False),
    ("group.phys-higgs.ana.v1", True, False, True),
    ("group15.phys-higgs.ana.v1", True, False, True),
    ("user.alice.ana.v1", True, False, False),
    ("user.alice." + "x" * 108, False, True, True),  # 120 with its '/'
    ("user.alice." + "x" * 109, False, True, False),
    ("user.alice." + "x" * 109, False, False, True),
    ("user.alice.ana;v1", False, False, False),
]


@pytest.mark.parametrize("out_ds, official, merge, accepted", OUT_DS_RULES)
def test_output_names_follow_prun_s_rules(out_ds, official, merge, accepted):
    [answer] = witness([{"mode": "out_ds", "out_ds": out_ds + "/", "official": official, "merge": merge,
                         "nickname": "bob" if out_ds.startswith("user.bob.") else "alice",
                         "groups": ["phys-higgs"]}])
    assert answer["accepted"] is accepted
    fields = dict(exec="echo", out_ds=out_ds, official=official, merge_output=merge)
    if accepted:
        PrunTask(**fields)
    else:
        with pytest.raises(PandaInputError):
            PrunTask(**fields)


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
    ("bad secondary stream", dict(GOOD, in_ds="d.a", secondary=[SecondaryInput("bkg", "d.b", 1)]), "stream name"),
    ("bad site", dict(GOOD, site="ANALY X"), "site names"),
    ("bad vo", dict(GOOD, vo="ATLAS!"), "vo must be"),
    ("bad label", dict(GOOD, prod_source_label="User Label"), "prod_source_label"),
    ("container with space", dict(GOOD, container_image="docker://a b"), "container_image"),
    ("extra overrides taskName", dict(GOOD, extra={"taskName": "x"}), "may not set"),
    ("build without sandbox", dict(GOOD, build=True), "needs a sandbox"),
    ("group name without official", dict(GOOD, out_ds="group.phys-higgs.x"), "needs official=True"),
    ("user name with official", dict(GOOD, official=True), "'group.<group>.'"),
    ("merged out_ds too long", dict(GOOD, out_ds="user.alice." + "x" * 109, merge_output=True), "at most 120"),
    ("athena packages without a release", dict(GOOD, use_athena_packages=True, sandbox="."), "athena_tag="),
    ("a Jinja statement in shell text", dict(GOOD, exec="printf '{%s}' x"), "{% raw %}"),
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
        return {"exec": "cat %IN", "out_ds": "user.alice.deco_bad", "n_gb_per_job": 5, "n_events_per_job": 9}

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
