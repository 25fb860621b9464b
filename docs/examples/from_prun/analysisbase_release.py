"""From a prun line to PrunTask: an AnalysisBase release set up on the grid (no container), reading its input
file names from a text file, with more files per job than prun's default ceiling.

prun reads CMTCONFIG from the shell you type the line in (after ``asetup``): PrunTask has no shell, so the
platform is written out (``cmt_config``), as ``--cmtConfig`` would. The directory prun was run in is the
sandbox. tests/test_prun_lines.py builds ``TASK`` and checks that its map is the one prun makes of ``PRUN_LINE``.
"""

from pathlib import Path

from airflow_provider_panda.builder import PrunTask

PRUN_LINE = r"""
prun --exec "./runAna.sh in.txt" --writeInputToTxt IN:in.txt \
     --athenaTag=AnalysisBase,24.2.35 --cmtConfig=x86_64-el9-gcc13-opt \
     --inDS \
  mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS.e8514_s4162_r14622_p6026 \
     --outDS user.jdoe.ttbar.mc23.v3 --outputs hist:hist-output.root,tree:tree.root \
     --nFilesPerJob 300 --maxNFilesPerJob 500 --noBuild
"""

TASK = PrunTask(
    exec="./runAna.sh in.txt",
    write_input_to_txt={"IN": "in.txt"},  # or "IN:in.txt", as prun writes it
    athena_tag="AnalysisBase,24.2.35",
    cmt_config="x86_64-el9-gcc13-opt",
    in_ds="mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS."
          "e8514_s4162_r14622_p6026",
    out_ds="user.jdoe.ttbar.mc23.v3",
    outputs=["hist:hist-output.root", "tree:tree.root"],
    n_files_per_job=300,
    max_files_per_job=500,
    sandbox=str(Path(__file__).parent / "ttbar"),  # the directory holding runAna.sh (prun's working directory)
)
