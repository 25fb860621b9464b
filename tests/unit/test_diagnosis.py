"""The diagnosis of a failed attempt (:mod:`airflow_provider_panda.diagnosis`), from task details and
job dicts shaped as the server returns them (``task/get_detailed_info``,
``job/get_description_incl_archive``), with error codes taken from PanDA's own sources (the pilot's
``errorcodes.py``, panda-server's ``ErrorCode.py`` modules)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_panda import api
from airflow_provider_panda.diagnosis import (
    DDM_CODES,
    DISPATCHER_CODES,
    MAX_SAMPLE,
    PILOT_CODES,
    SUP_CODES,
    TASKBUFFER_CODES,
    Category,
    diagnose,
    job_cause,
)

_ids = iter(range(6_000_000_000, 7_000_000_000))


def job(status: str = "failed", site: str = "SITE_A", **fields: Any) -> dict[str, Any]:
    """A job as ``job/get_description_incl_archive`` describes it: every error field present, 0 or
    ``NULL`` when unset, the fields given overriding."""
    base: dict[str, Any] = {
        "PandaID": next(_ids), "jediTaskID": 4242, "jobStatus": status, "computingSite": site,
        "attemptNr": 1, "maxAttempt": 3, "minRamCount": 2000, "coreCount": 1, "maxWalltime": 43200,
        "transExitCode": 0, "pilotErrorCode": 0, "pilotErrorDiag": "NULL", "exeErrorCode": 0, "exeErrorDiag": "NULL",
        "ddmErrorCode": 0, "ddmErrorDiag": "NULL", "supErrorCode": 0, "supErrorDiag": "NULL",
        "taskBufferErrorCode": 0, "taskBufferErrorDiag": "NULL", "brokerageErrorCode": 0,
        "jobDispatcherErrorCode": 0, "jobDispatcherErrorDiag": "NULL",
    }
    base.update(fields)
    return base


def info(status: str = "failed", **fields: Any) -> dict[str, Any]:
    """A task's details as ``task/get_detailed_info`` gives them (the fields the diagnosis reads)."""
    base: dict[str, Any] = {"jediTaskID": 4242, "status": status, "errorDialog": None, "attemptNr": 1,
                            "nFiles": 40, "nFilesFinished": 0, "nFilesFailed": 40, "ramCount": 2000,
                            "ramUnit": "MBPerCore", "vo": "atlas", "prodSourceLabel": "user",
                            "raw_task_params": {"taskName": "user.someone.test/", "nFilesPerJob": 1}}
    base.update(fields)
    return base


def spread(n: int, sites: tuple[str, ...] = ("SITE_A", "SITE_B", "SITE_C"), **fields: Any) -> list[dict[str, Any]]:
    """``n`` failed jobs over ``sites`` in turn."""
    return [job(site=sites[i % len(sites)], **fields) for i in range(n)]


# --- memory -----------------------------------------------------------------------------------


def test_memory_failures_name_the_code_the_count_and_the_sites():
    jobs = spread(37, pilotErrorCode=1212, pilotErrorDiag="Payload ran out of memory", minRamCount=4000)
    jobs += spread(3, sites=("SITE_D",), pilotErrorCode=1099)
    d = diagnose(info(ramCount=4000), jobs)
    assert d.category == Category.MEMORY
    assert d.evidence == "37 of 40 failed jobs: pilot error 1212 (payload ran out of memory) at 3 sites"
    assert (d.failed_jobs, d.matching_jobs, d.ram_count, d.ram_unit) == (40, 37, 4000, "MBPerCore")
    assert set(d.sites) == {"SITE_A", "SITE_B", "SITE_C"}


@pytest.mark.parametrize("code", [1212, 1235, 1237, 1223])
def test_every_memory_code_of_the_pilot_is_memory(code):
    assert diagnose(info(), spread(5, pilotErrorCode=code)).category == Category.MEMORY


def test_several_memory_codes_are_listed_with_their_counts():
    jobs = spread(30, pilotErrorCode=1212) + spread(7, pilotErrorCode=1235)
    d = diagnose(info(), jobs)
    assert d.category == Category.MEMORY
    assert d.evidence == ("37 of 37 failed jobs: pilot error 1212 (payload ran out of memory) x30, "
                          "pilot error 1235 (payload exceeded maximum allowed memory) x7 at 3 sites")


def test_a_job_raised_by_jedi_above_the_task_memory_counts_per_core():
    jobs = spread(4, pilotErrorCode=1212, minRamCount=12000, coreCount=4)  # 3000 MB per core
    assert diagnose(info(ramCount=2000), jobs).ram_count == 3000
    jobs = spread(4, pilotErrorCode=1212, minRamCount=8000, coreCount=4)
    assert diagnose(info(ramCount=None), jobs).ram_count == 2000


# --- time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1213, 1204])
def test_time_limits_are_walltime(code):
    d = diagnose(info(), spread(6, pilotErrorCode=code, maxWalltime=36000))
    assert (d.category, d.looping, d.max_walltime) == (Category.WALLTIME, False, 36000)


def test_a_looping_job_is_walltime_with_the_looping_flag():
    d = diagnose(info(), spread(6, pilotErrorCode=1150, pilotErrorDiag="Looping job killed by pilot"))
    assert (d.category, d.looping) == (Category.WALLTIME, True)
    assert "pilot error 1150 (looping job killed by pilot)" in d.evidence


def test_the_tasks_own_max_walltime_and_files_per_job_are_read():
    d = diagnose(info(raw_task_params={"maxWalltime": 12, "nFilesPerJob": 10}), spread(3, pilotErrorCode=1213))
    assert (d.max_walltime_hours, d.files_per_job) == (12, 10)


# --- sites and storage ------------------------------------------------------------------------


def test_stage_in_failures_at_one_site_while_jobs_finish_elsewhere():
    jobs = [job(site="SITE_A", pilotErrorCode=1099, pilotErrorDiag="Failed to stage-in file") for _ in range(12)]
    jobs += [job("finished", site="SITE_B") for _ in range(20)] + [job("finished", site="SITE_C")]
    d = diagnose(info(nFilesFinished=21, nFilesFailed=12), jobs)
    assert d.category == Category.SITE
    assert (d.bad_sites, d.ok_sites) == (("SITE_A",), ("SITE_B", "SITE_C"))
    assert d.evidence == ("12 of 12 failed jobs: pilot error 1099 (stage-in failed) at SITE_A x12; "
                          "jobs finished at SITE_B, SITE_C")


@pytest.mark.parametrize("fields", [
    {"pilotErrorCode": 1137},  # STAGEOUTFAILED
    {"pilotErrorCode": 1152},  # STAGEOUTTIMEOUT
    {"pilotErrorCode": 1331},  # MISSINGINPUTFILE
    {"pilotErrorCode": 1201},  # SIGTERM from the batch system
    {"pilotErrorCode": 1377},  # CVMFSISNOTALIVE
    {"ddmErrorCode": 200, "ddmErrorDiag": "Could not get GUID/LFN/MD5/FSIZE/SURL from pilot JSON"},
    {"jobDispatcherErrorCode": 100, "jobDispatcherErrorDiag": "lost heartbeat : 2026-01-01 00:00:00"},
    {"supErrorCode": 2, "supErrorDiag": "worker already finished"},
    {"taskBufferErrorCode": 300},  # EC_WorkerDone
])
def test_storage_and_site_codes_are_site(fields):
    assert diagnose(info(), [job(**fields) for _ in range(4)]).category == Category.SITE


def test_a_site_where_jobs_also_finished_is_not_a_site_to_exclude():
    jobs = [job(site="SITE_A", pilotErrorCode=1151) for _ in range(3)] + [job(site="SITE_B", pilotErrorCode=1151)]
    jobs += [job("finished", site="SITE_B")]
    d = diagnose(info(), jobs)
    assert (d.category, d.bad_sites, d.sites) == (Category.SITE, ("SITE_A",), ("SITE_A", "SITE_B"))


def test_the_sites_the_task_already_excludes_are_read_as_list_or_text():
    assert diagnose(info(raw_task_params={"excludedSite": ["A", "B"]}), []).excluded_sites == ("A", "B")
    assert diagnose(info(raw_task_params={"excludedSite": "A, B,,A"}), []).excluded_sites == ("A", "B")


# --- the user's code --------------------------------------------------------------------------


def test_the_same_payload_exit_code_everywhere_is_user_code():
    d = diagnose(info(), spread(40, transExitCode=1, pilotErrorCode=1305, pilotErrorDiag="Failed to execute payload"))
    assert d.category == Category.USER_CODE
    assert d.evidence == "40 of 40 failed jobs: payload exit code 1 at 3 sites"
    assert d.exit_codes == (1,)


def test_the_payload_exit_code_says_more_than_the_pilots_generic_code():
    assert job_cause(job(pilotErrorCode=1305, transExitCode=2)).label == "payload exit code 2"
    assert job_cause(job(pilotErrorCode=1220)).label == "pilot error 1220 (payload failed for an unknown reason)"
    assert job_cause(job(exeErrorCode=65, exeErrorDiag="Non-zero return code")).label == "payload error 65"


def test_a_payload_failing_at_one_site_only_while_it_runs_elsewhere_is_the_sites():
    jobs = [job(site="SITE_A", transExitCode=127, pilotErrorCode=1305) for _ in range(8)]
    jobs += [job("finished", site="SITE_B") for _ in range(8)]
    d = diagnose(info(), jobs)
    assert (d.category, d.bad_sites) == (Category.SITE, ("SITE_A",))
    assert "payload exit code 127 at SITE_A x8 only; jobs finished at SITE_B" in d.evidence


def test_a_payload_failing_at_its_only_site_with_nothing_finished_is_user_code():
    d = diagnose(info(), [job(site="SITE_A", transExitCode=127) for _ in range(8)])
    assert d.category == Category.USER_CODE


@pytest.mark.parametrize("code", [1335, 1165, 1349, 1328])
def test_errors_of_the_tasks_own_code_are_user_code(code):
    assert diagnose(info(), spread(4, pilotErrorCode=code)).category == Category.USER_CODE


# --- what does not count, and which field wins ------------------------------------------------


def test_jobs_replaced_by_a_retry_or_killed_are_not_counted():
    jobs = spread(9, pilotErrorCode=1212)
    jobs += [job("closed", taskBufferErrorCode=106), job("closed", taskBufferErrorCode=107, pilotErrorCode=1099),
             job("cancelled", taskBufferErrorCode=100), job("failed", pilotErrorCode=1144)]
    d = diagnose(info(), jobs)
    assert (d.category, d.failed_jobs, d.not_counted) == (Category.MEMORY, 9, 4)
    assert d.evidence.endswith("(4 replaced or killed jobs not counted)")


def test_which_error_field_wins():
    assert job_cause(job(taskBufferErrorCode=105, pilotErrorCode=1212)).kind == "superseded"
    memory = job_cause(job(pilotErrorCode=1212, transExitCode=137))
    assert memory.label == "pilot error 1212 (payload ran out of memory)"
    assert job_cause(job(ddmErrorCode=201, transExitCode=1)).label == "DDM error 201 (subscription failed)"
    assert job_cause(job(pilotErrorCode=9999)).label == "pilot error 9999"
    assert job_cause(job(brokerageErrorCode=7)).label == "brokerage error 7"
    assert job_cause(job()).label == "job failed without an error code"


def test_codes_sent_as_text_are_read():
    cause = job_cause(job(pilotErrorCode="1212", transExitCode="NULL", ddmErrorCode=None))
    assert (cause.kind, cause.code, cause.source) == ("memory", 1212, "pilotErrorCode")


# --- task-level outcomes ----------------------------------------------------------------------


def test_lost_files_of_a_done_task_call_for_recovery():
    d = diagnose(info("done", nFilesFailed=0, nFilesFinished=40), [job("finished") for _ in range(5)], lost_files=3)
    assert d.category == Category.LOST_FILES
    assert d.evidence.startswith("3 output files lost")


def test_lost_files_do_not_hide_failing_jobs():
    d = diagnose(info("failed"), spread(10, pilotErrorCode=1212), lost_files=3)
    assert d.category == Category.MEMORY


def test_no_failed_job_in_the_sample_is_unknown_with_pandas_words():
    d = diagnose(info(errorDialog="task is aborted by user"), [job("finished")])
    assert d.category == Category.UNKNOWN
    assert d.evidence == "none of the 1 sampled jobs failed of its own; PanDA says: task is aborted by user"
    assert diagnose(None, None).evidence == "no job was read"


def test_an_exhausted_task_short_of_its_goal_has_too_few_attempts():
    dialog = "exhausted since the task was incomplete and didn't reach the goal"
    d = diagnose(info("exhausted", errorDialog=dialog), [])
    assert d.category == Category.TOO_FEW_ATTEMPTS


def test_mixed_transient_errors_at_the_last_attempt_are_too_few_attempts():
    jobs = ([job(pilotErrorCode=1099, attemptNr=3)] * 2 + [job(jobDispatcherErrorCode=100, attemptNr=3)]
            + [job(pilotErrorCode=9999, attemptNr=3)] * 3 + [job(pilotErrorCode=1212, attemptNr=3, site="SITE_B")] * 2)
    d = diagnose(info(nFilesFinished=30, nFilesFailed=8), jobs)
    assert d.category == Category.TOO_FEW_ATTEMPTS
    assert d.at_last_attempt == 8
    assert d.evidence.startswith("8 of 8 failed jobs at their last attempt, with mixed errors")


def test_mixed_errors_without_progress_are_unknown():
    jobs = [job(pilotErrorCode=9999, attemptNr=3)] * 3 + [job(pilotErrorCode=1099, attemptNr=3)] * 2
    d = diagnose(info(nFilesFinished=0), jobs)
    assert d.category == Category.UNKNOWN
    assert d.evidence.startswith("no single cause: pilot error 9999 x3, pilot error 1099 (stage-in failed) x2")


@pytest.mark.parametrize("dialog", [
    "This task can no longer continue following the retry attempt because too many task attempts more than 5 "
    "are forbidden. No further retries are accepted.",
    "retry was rejected due to too many attempts (10 >= 10) for some jobs",
])
def test_pandas_refusal_of_more_retries_is_kept(dialog):
    d = diagnose(info("exhausted", errorDialog=dialog), spread(3, pilotErrorCode=1212))
    assert d.retry_refused == dialog


# --- the sample's bound and the output --------------------------------------------------------


def test_only_the_newest_max_sample_jobs_are_looked_at():
    jobs = [job(pilotErrorCode=1099) for _ in range(300)] + [job(pilotErrorCode=1212) for _ in range(MAX_SAMPLE)]
    d = diagnose(info(), [None, *jobs])
    assert (d.sampled_jobs, d.failed_jobs, d.category) == (MAX_SAMPLE, MAX_SAMPLE, Category.MEMORY)


def test_the_diagnosis_goes_into_xcom_as_plain_json():
    d = diagnose(info(raw_task_params={"excludedSite": ["X"]}), spread(3, pilotErrorCode=1212))
    data = json.loads(json.dumps(d.to_dict()))
    assert data["category"] == "memory" and data["excluded_sites"] == ["X"]
    assert data["causes"] == [["pilot error 1212 (payload ran out of memory)", 3]]
    assert d.summary == "task failed; 40 of 40 input files failed; " + d.evidence


def test_the_code_tables_use_known_kinds_and_the_failed_statuses_are_the_apis():
    kinds = {"memory", "walltime", "looping", "site", "storage", "user", "superseded", "killed"}
    for table in (PILOT_CODES, TASKBUFFER_CODES, DISPATCHER_CODES, DDM_CODES, SUP_CODES):
        assert {kind for kind, _ in table.values()} <= kinds
    from airflow_provider_panda import diagnosis

    assert diagnosis.JOB_FAILED == api.JOB_FAILED
