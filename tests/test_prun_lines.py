"""prun lines as ATLAS users type them (quotes, ``--opt=value``, options in their own order, line breaks),
each next to the PrunTask a user writes for it: the task parameter map is prun's (panda-client 2.2.0, the
witness), and the builder's cliParams is the same command line up to the order of its options (prun parses
both to the same options). The docs' "from your prun line to PrunTask" examples are checked here too."""

from __future__ import annotations

import importlib.util
import shlex
import warnings
from pathlib import Path
from typing import Any

import pytest
from prun_witness import make_case, prun_options, prun_params, witness
from test_task_builder import SANDBOX, normalise_sandbox, shell_of

from airflow_provider_panda.builder import PrunTask, SecondaryInput

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples" / "from_prun"
TTBAR = ("mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS."
         "e8514_s4162_r14622_p6026")
DATA = "data18_13TeV:data18_13TeV.periodAllYear.physics_Main.PhysCont.DAOD_PHYS.grp18_v01_p5631"
CMT = "x86_64-el9-gcc13-opt"
IMAGE = "docker://gitlab-registry.cern.ch/atlas/athena/analysisbase:24.2.35"

#: (case id, the line as typed, the builder's fields, prun options the builder says differently and why)
USER_LINES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("container ntuples merged",
     f'prun --exec "python run.py %IN" --inDS {TTBAR} --outDS user.jdoe.ttbar.v1 --outputs out.root '
     f"--nFilesPerJob 5 --containerImage {IMAGE} --mergeOutput",
     dict(exec="python run.py %IN", in_ds=TTBAR, out_ds="user.jdoe.ttbar.v1", outputs=["out.root"],
          n_files_per_job=5, container_image=IMAGE, merge_output=True), ()),
    ("AnalysisBase release, split by size",
     f"prun --exec 'ana.sh %IN' --athenaTag AnalysisBase,24.2.35 --cmtConfig {CMT} --inDS {DATA} "
     "--outDS user.jdoe.data18.v2 --outputs hist-output.root,tree:tree.root --noBuild --nGBPerJob 10",
     dict(exec="ana.sh %IN", athena_tag="AnalysisBase,24.2.35", cmt_config=CMT, in_ds=DATA,
          out_ds="user.jdoe.data18.v2", outputs=["hist-output.root", "tree:tree.root"], n_gb_per_job=10), ()),
    ("ROOT macro reading a file list",
     "prun --exec \"root -b -q 'macro.C(\\\"in.txt\\\")'\" --writeInputToTxt IN:in.txt --maxNFilesPerJob 500 "
     f"--nFilesPerJob 300 --inDS {DATA} --outDS user.jdoe.macro.v1 --outputs hist.root --noBuild --forceStaged",
     dict(exec="root -b -q 'macro.C(\"in.txt\")'", write_input_to_txt="IN:in.txt", max_files_per_job=500,
          n_files_per_job=300, in_ds=DATA, out_ds="user.jdoe.macro.v1", outputs=["hist.root"], force_staged=True),
     ()),
    ("generation with --opt=value",
     "prun --exec='echo %RNDM:100 > out.txt' --outDS=user.jdoe.gen.001 --outputs=out.txt --nJobs=10 --site=AUTO "
     "--noBuild --noEmail",
     dict(exec="echo %RNDM:100 > out.txt", out_ds="user.jdoe.gen.001", outputs=["out.txt"], n_jobs=10, site="AUTO",
          no_email=True), ()),
    ("official group ntuples, merged with their logs",
     f'prun --exec "run.sh %IN" --inDS {DATA} --outDS group.phys-higgs.ntup.v3 --official --workingGroup '
     "phys-higgs --outputs ntup.root --mergeOutput --mergeLog --nGBPerMergeJob 20 --noBuild",
     dict(exec="run.sh %IN", in_ds=DATA, out_ds="group.phys-higgs.ntup.v3", official=True, working_group="phys-higgs",
          outputs=["ntup.root"], merge_output=True, merge_log=True, n_gb_per_merge_job=20), ()),
    ("scoped secondary with a pattern",
     f'prun --exec "python mix.py %IN %BKG" --inDS {TTBAR} --secondaryDSs '
     '"BKG#1#mc23_13p6TeV:mc23_13p6TeV.900149.PG_single_nu_Pt50.merge.HITS.e8514_s4159_s4114#*.root" '
     "--outDS user.jdoe.mix.v1 --outputs mixed.root --nFilesPerJob 1 --noBuild",
     dict(exec="python mix.py %IN %BKG", in_ds=TTBAR, out_ds="user.jdoe.mix.v1", outputs=["mixed.root"],
          n_files_per_job=1,
          secondary=[SecondaryInput("BKG", "mc23_13p6TeV:mc23_13p6TeV.900149.PG_single_nu_Pt50.merge.HITS."
                                           "e8514_s4159_s4114", 1, pattern="*.root")]), ()),
    ("file selection away from some sites",
     f'prun --exec "ana %IN" --inDS {DATA} --outDS user.jdoe.skim.v4 --outputs skim.root '
     '--excludedSite "ANALY_BNL*,ANALY_SLAC" --match "*.pool.root.1" --antiMatch "*_tid00001*" --nSkipFiles 2 '
     "--noBuild",
     dict(exec="ana %IN", in_ds=DATA, out_ds="user.jdoe.skim.v4", outputs=["skim.root"],
          excluded_sites=["ANALY_BNL*", "ANALY_SLAC"], match="*.pool.root.1", anti_match="*_tid00001*",
          n_skip_files=2), ()),
    ("bash with arrays and dates",
     """prun --exec 'IFS=, read -ra f <<< "%IN"; echo "${#f[@]} files at $(date +%FT%T)"; python ana.py %IN' """
     f"--inDS {DATA} --outDS user.jdoe.bash.v1 --outputs out.root --noBuild",
     dict(exec='IFS=, read -ra f <<< "%IN"; echo "${#f[@]} files at $(date +%FT%T)"; python ana.py %IN', in_ds=DATA,
          out_ds="user.jdoe.bash.v1", outputs=["out.root"]), ()),
    ("outputs that may be missing, to a disk of my group, on chosen sites",
     f'prun --exec "./run.sh %IN" --inDS {DATA} --outDS user.jdoe.sel.v7 --outputs "out.root,hist:hist*.root" '
     '--allowNoOutput "hist.*" --destSE DESY-HH_LOCALGROUPDISK --site ANALY_DESY-HH_UCORE,ANALY_MANC_UCORE '
     "--noBuild",
     dict(exec="./run.sh %IN", in_ds=DATA, out_ds="user.jdoe.sel.v7", outputs=["out.root", "hist:hist*.root"],
          allow_no_output=["hist.*"], dest_se="DESY-HH_LOCALGROUPDISK",
          site=["ANALY_DESY-HH_UCORE", "ANALY_MANC_UCORE"]), ()),
    ("Athena job options built on the grid",
     f'prun --exec "athena.py MyPackage/jobOptions.py" --athenaTag=AthAnalysis,21.2.170 '
     f"--cmtConfig=x86_64-centos7-gcc8-opt --inDS {DATA} --outDS user.jdoe.ath.v1 --outputs out.pool.root "
     "--nEventsPerJob 1000",
     dict(exec="athena.py MyPackage/jobOptions.py", athena_tag="AthAnalysis,21.2.170",
          cmt_config="x86_64-centos7-gcc8-opt", in_ds=DATA, out_ds="user.jdoe.ath.v1", outputs=["out.pool.root"],
          n_events_per_job=1000, build=True, sandbox="."), ()),
    ("every submission flag",
     f'prun --exec "python skim.py %IN" --inDS {DATA} --outDS user.jdoe.flags.v1 --outputs skim.root --noBuild '
     "--avoidVP --disableAutoRetry --osMatching --skipEmptyInput --useNewCode --nFiles 100 --maxAttempt 3 "
     "--memory 4000",
     dict(exec="python skim.py %IN", in_ds=DATA, out_ds="user.jdoe.flags.v1", outputs=["skim.root"], avoid_vp=True,
          disable_auto_retry=True, os_matching=True, skip_empty_input=True, use_new_code=True, n_files=100,
          max_attempt=3, memory=4000, sandbox="."), ()),
    ("size MAX with files per job",
     f"prun --exec 'ana %IN' --inDS {DATA} --outDS user.jdoe.gbmax.v1 --nGBPerJob=MAX --nFilesPerJob=10 --noBuild",
     dict(exec="ana %IN", in_ds=DATA, out_ds="user.jdoe.gbmax.v1", n_gb_per_job="MAX", n_files_per_job=10), ()),
    ("the latest DBRelease",
     "prun --exec 'athena.py --evtMax 10 jo.py %DB:LATEST' --athenaTag Athena,22.0.104 --cmtConfig "
     "x86_64-centos7-gcc11-opt --outDS user.jdoe.dbr.v1 --nJobs 2 --noBuild",
     dict(exec="athena.py --evtMax 10 jo.py %DB:LATEST", athena_tag="Athena,22.0.104",
          cmt_config="x86_64-centos7-gcc11-opt", out_ds="user.jdoe.dbr.v1", n_jobs=2), ()),
    ("ROOT in a container, merged by hadd, two input lists",
     'prun --exec "root -b -q ana.C" --containerImage docker://rootproject/root:6.30.04-ubuntu22.04 '
     f"--writeInputToTxt IN:in.txt,BKG:bkg.txt --inDS {DATA} --secondaryDSs BKG:2:user.jdoe.bkg.v1/ "
     '--outDS user.jdoe.rootana.v1 --outputs hist.root --mergeOutput --mergeScript="hadd -f %OUT %IN"',
     dict(exec="root -b -q ana.C", container_image="docker://rootproject/root:6.30.04-ubuntu22.04",
          write_input_to_txt={"IN": "in.txt", "BKG": "bkg.txt"}, in_ds=DATA,
          secondary=[SecondaryInput("BKG", "user.jdoe.bkg.v1/", 2)], out_ds="user.jdoe.rootana.v1",
          outputs=["hist.root"], merge_output=True, merge_script="hadd -f %OUT %IN", sandbox="."),
     ("mergeOutput",)),  # the builder adds --mergeOutput, which --mergeScript implies (the same map)
    ("Athena packages from an asetup'd work area",
     f'prun --exec "athena.py MyAlg/MyAlg_jobOptions.py %IN" --useAthenaPackages --inDS {DATA} '
     "--outDS user.jdoe.pkg.v1 --outputs myalg.root --noBuild",
     dict(exec="athena.py MyAlg/MyAlg_jobOptions.py %IN", use_athena_packages=True, athena_tag="AnalysisBase,24.2.35",
          cmt_config=CMT, in_ds=DATA, out_ds="user.jdoe.pkg.v1", outputs=["myalg.root"], sandbox="."),
     ("athenaTag", "cmtConfig")),  # prun reads them from the shell (asetup AnalysisBase,24.2.35); the builder has none
]


def example(path: Path) -> tuple[str, PrunTask]:
    spec = importlib.util.spec_from_file_location(f"from_prun_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PRUN_LINE, module.TASK


EXAMPLES_FILES = sorted(EXAMPLES.glob("*.py"))


def argv_of(line: str) -> list[str]:
    """The arguments a shell hands prun for this line (continuation lines joined)."""
    words = shlex.split(line.replace("\\\n", " "))
    assert words[0] == "prun"
    return words[1:]


def _prefetch() -> None:
    cases = []
    for _, line, fields, _ in USER_LINES:
        cases += [make_case(argv_of(line), env=shell_of(fields)), make_case(argv_of(line), mode="options")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases.append(make_case(PrunTask(**fields).prun_args(), mode="options"))
    for path in EXAMPLES_FILES:
        line, task = example(path)
        cases += [make_case(argv_of(line)), make_case(argv_of(line), mode="options"),
                  make_case(task.prun_args(), mode="options")]
    witness(cases)


def check_line(line: str, builder: PrunTask, fields: dict[str, Any], said_differently: tuple[str, ...] = ()) -> None:
    argv = argv_of(line)
    theirs = normalise_sandbox(prun_params(argv, env=shell_of(fields)), SANDBOX)
    ours = builder.to_params(source_url=theirs["sourceURL"], sandbox_name=SANDBOX)
    assert ours.pop("cliParams") != "" and theirs.pop("cliParams") != ""
    assert ours == theirs
    typed, recorded = prun_options(argv), prun_options(builder.prun_args())
    for name in said_differently:
        typed.pop(name), recorded.pop(name)
    assert recorded == typed  # cliParams is the typed line, up to the order of its options


@pytest.mark.parametrize("line, fields, said_differently", [c[1:] for c in USER_LINES],
                         ids=[c[0] for c in USER_LINES])
def test_a_prun_line_as_typed_gives_the_builder_s_map(line, fields, said_differently):
    _prefetch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder = PrunTask(**fields)
    check_line(line, builder, fields, said_differently)


def test_there_are_at_least_a_dozen_lines():
    assert len(USER_LINES) >= 12 and len({c[0] for c in USER_LINES}) == len(USER_LINES)


@pytest.mark.parametrize("path", EXAMPLES_FILES, ids=[p.stem for p in EXAMPLES_FILES])
def test_the_docs_examples_are_their_prun_lines(path):
    _prefetch()
    line, task = example(path)
    check_line(line, task, task.to_dict())
    assert (ROOT / "docs" / "builder.md").read_text().count(f'--8<-- "docs/examples/from_prun/{path.name}"') == 1


def test_there_are_three_docs_examples():
    assert len(EXAMPLES_FILES) == 3
