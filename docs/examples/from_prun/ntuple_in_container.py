"""From a prun line to PrunTask: an ntuple made in a container over a data container, outputs merged.

tests/test_prun_lines.py builds ``TASK`` and checks that its task parameter map is the one prun (panda-client
2.2.0) makes of ``PRUN_LINE``.
"""

from airflow_provider_panda.builder import PrunTask

PRUN_LINE = r"""
prun --exec "python /opt/ntup/make.py --in %IN --out ntuple.root" \
     --inDS data22_13p6TeV:data22_13p6TeV.periodAllYear.physics_Main.PhysCont.DAOD_PHYSLITE.grp22_v01_p6266 \
     --outDS user.jdoe.ntuple.data22.v1 --outputs ntuple.root \
     --containerImage docker://gitlab-registry.cern.ch/atlas/athena/analysisbase:24.2.35 \
     --nGBPerJob 10 --mergeOutput --nGBPerMergeJob 20 \
     --excludedSite "ANALY_BNL*" --memory 3000 --noEmail
"""

TASK = PrunTask(
    exec="python /opt/ntup/make.py --in %IN --out ntuple.root",
    in_ds="data22_13p6TeV:data22_13p6TeV.periodAllYear.physics_Main.PhysCont.DAOD_PHYSLITE.grp22_v01_p6266",
    out_ds="user.jdoe.ntuple.data22.v1",  # the task's name: make it unique per run in a DAG
    outputs=["ntuple.root"],
    container_image="docker://gitlab-registry.cern.ch/atlas/athena/analysisbase:24.2.35",
    n_gb_per_job=10,
    merge_output=True,
    n_gb_per_merge_job=20,
    excluded_sites=["ANALY_BNL*"],  # wildcards as in prun
    memory=3000,
    no_email=True,
)
