"""From a prun line to PrunTask: an official group production mixing a scoped secondary dataset, with shell
text that holds ``%`` and ``${#...}`` (neither a prun placeholder nor Jinja: both are passed on as typed).

tests/test_prun_lines.py builds ``TASK`` and checks that its map is the one prun makes of ``PRUN_LINE``.
"""

from airflow_provider_panda.builder import PrunTask, SecondaryInput

PRUN_LINE = r"""
prun --exec 'IFS=, read -ra f <<< "%IN"; echo "${#f[@]} files $(date +%FT%T)"; python mix.py %IN %BKG' \
     --inDS \
  mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS.e8514_s4162_r14622_p6026 \
     --secondaryDSs "BKG#1#mc23_13p6TeV:mc23_13p6TeV.900149.PG_single_nu_Pt50.merge.HITS.e8514_s4159_s4114#*.root" \
     --outDS group.phys-higgs.mix.ttbar.v2 --official --workingGroup phys-higgs \
     --outputs mixed.root,log:mix.json --allowNoOutput "mix.json" \
     --site ANALY_CERN_GPU,ANALY_MWT2_GPU,AUTO --nFilesPerJob 2 --maxAttempt 5 \
     --containerImage docker://ghcr.io/jdoe/mixer:2.1
"""

TASK = PrunTask(
    exec='IFS=, read -ra f <<< "%IN"; echo "${#f[@]} files $(date +%FT%T)"; python mix.py %IN %BKG',
    in_ds="mc23_13p6TeV:mc23_13p6TeV.601229.PhPy8EG_A14_ttbar_hdamp258p75_SingleLep.deriv.DAOD_PHYS."
          "e8514_s4162_r14622_p6026",
    secondary=[SecondaryInput(stream="BKG", n_files_per_job=1, pattern="*.root",
                              dataset="mc23_13p6TeV:mc23_13p6TeV.900149.PG_single_nu_Pt50.merge.HITS.e8514_s4159_s4114")],
    out_ds="group.phys-higgs.mix.ttbar.v2",
    official=True,  # group.<group>. names; PanDA checks your production role in that group
    working_group="phys-higgs",
    outputs=["mixed.root", "log:mix.json"],
    allow_no_output=["mix.json"],
    site=["ANALY_CERN_GPU", "ANALY_MWT2_GPU", "AUTO"],
    n_files_per_job=2,
    max_attempt=5,
    container_image="docker://ghcr.io/jdoe/mixer:2.1",
)
