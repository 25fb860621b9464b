"""The retry policies (:mod:`airflow_provider_panda.retry_policy`): each rule of the default policy
and its bound, from diagnoses of realistic jobs (:mod:`tests.unit.test_diagnosis`'s builders), the
refusal of retry keys PanDA does not apply, and the simple ``auto_retries`` form."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_panda.diagnosis import Category, Diagnosis, diagnose
from airflow_provider_panda.exceptions import PandaInputError
from airflow_provider_panda.retry_policy import (
    INCREASE_ATTEMPTS,
    RECOVER,
    RETRY,
    RETRY_KEYS,
    STOP,
    Decision,
    DefaultRetryPolicy,
    RetryPolicy,
    SimplePolicy,
    check_retry_params,
    policy_for,
    refused_keys,
)
from tests.unit.test_diagnosis import info, job, spread

POLICY = DefaultRetryPolicy()
MEMORY_EVIDENCE = "37 of 40 failed jobs: pilot error 1212 (payload ran out of memory) at 3 sites"


def memory(ram: int | None = 4000, status: str = "failed") -> Diagnosis:
    jobs = spread(37, pilotErrorCode=1212, minRamCount=None)
    jobs += spread(3, sites=("SITE_D",), pilotErrorCode=1099, minRamCount=None)
    return diagnose(info(status, ramCount=ram), jobs)


def site_failure(vo: str = "atlas", label: str = "user", excluded: list[str] | None = None) -> Diagnosis:
    jobs = [job(site="SITE_A", pilotErrorCode=1099) for _ in range(12)] + [job("finished", site="SITE_B")]
    params = {"excludedSite": excluded} if excluded else {}
    return diagnose(info(vo=vo, prodSourceLabel=label, raw_task_params=params), jobs)


def walltime(**params) -> Diagnosis:
    return diagnose(info(raw_task_params=params), spread(6, pilotErrorCode=1213, maxWalltime=None))


# --- memory -----------------------------------------------------------------------------------


def test_memory_retries_with_more_ram_and_says_why():
    decision = POLICY(memory(4000), 0)
    assert (decision.action, decision.new_params) == (RETRY, {"ramCount": 6000})
    assert decision.reason == f"{MEMORY_EVIDENCE}; retrying with ramCount 4000 -> 6000 MBPerCore"


def test_memory_steps_up_to_the_ceiling_then_stops():
    assert POLICY(memory(6000), 1).new_params == {"ramCount": 8000}  # 9000 capped
    decision = POLICY(memory(8000), 2)
    assert decision.action == STOP
    assert "at the policy's ceiling of 8000" in decision.reason


def test_memory_unknown_starts_from_the_assumed_default():
    decision = POLICY(memory(None), 0)
    assert decision.new_params == {"ramCount": 3000}
    assert "ramCount unknown (taken as 2000) -> 3000" in decision.reason


def test_memory_factor_and_ceiling_are_the_users():
    policy = DefaultRetryPolicy(memory_factor=2, memory_ceiling=16000)
    assert policy(memory(4000), 0).new_params == {"ramCount": 8000}
    assert policy(memory(10000), 1).new_params == {"ramCount": 16000}


def test_an_exhausted_task_takes_a_retry_with_new_memory():
    assert POLICY(memory(4000, status="exhausted"), 0).action == RETRY


# --- walltime ---------------------------------------------------------------------------------


def test_walltime_retries_with_shorter_jobs_when_it_can():
    decision = POLICY(walltime(nFilesPerJob=10), 0)
    assert (decision.action, decision.new_params) == (RETRY, {"nFilesPerJob": 5})
    assert decision.reason.endswith("a retry cannot give jobs more time, so retrying with shorter jobs: "
                                    "nFilesPerJob 10 -> 5")


def test_walltime_without_files_to_split_stops_with_the_resubmission_to_make():
    decision = POLICY(walltime(nFilesPerJob=1, maxWalltime=12), 0)
    assert (decision.action, decision.new_params, decision.suggested) == (STOP, {}, {"maxWalltime": 24})
    assert "resubmit the task with maxWalltime 12 -> 24 h" in decision.reason


def test_walltime_suggestion_from_the_jobs_limit_and_its_ceiling():
    from_jobs = diagnose(info(raw_task_params={}), spread(3, pilotErrorCode=1213, maxWalltime=36000))
    assert POLICY(from_jobs, 0).suggested == {"maxWalltime": 20}
    assert POLICY(walltime(maxWalltime=30), 0).suggested == {"maxWalltime": 48}
    at_ceiling = POLICY(walltime(maxWalltime=48), 0)
    assert (at_ceiling.action, at_ceiling.suggested) == (STOP, {})
    assert "the policy's ceiling of 48 h" in at_ceiling.reason
    unknown = POLICY(walltime(), 0)
    assert (unknown.action, unknown.suggested) == (STOP, {})


def test_walltime_splitting_can_be_turned_off():
    assert DefaultRetryPolicy(split_for_walltime=False)(walltime(nFilesPerJob=10, maxWalltime=6), 0).action == STOP


def test_looping_jobs_stop_with_the_looping_check_as_the_users_call():
    d = diagnose(info(raw_task_params={"nFilesPerJob": 10}), spread(6, pilotErrorCode=1150))
    decision = POLICY(d, 0)
    assert (decision.action, decision.suggested) == (STOP, {"loopingCheck": False})


# --- sites ------------------------------------------------------------------------------------


def test_a_failing_site_is_excluded_where_the_broker_honours_it():
    decision = POLICY(site_failure(), 0)
    assert (decision.action, decision.new_params) == (RETRY, {"excludedSite": ["SITE_A"]})
    assert decision.reason.endswith("retrying without SITE_A (excludedSite none -> SITE_A)")


def test_excluded_sites_add_up_to_the_bound():
    decision = POLICY(site_failure(excluded=["SITE_X", "SITE_Y"]), 1)
    assert decision.new_params == {"excludedSite": ["SITE_X", "SITE_Y", "SITE_A"]}
    full = POLICY(site_failure(excluded=["SITE_X", "SITE_Y", "SITE_Z"]), 1)
    assert full.action == STOP
    assert "already excludes 3 sites (SITE_X, SITE_Y, SITE_Z), the policy's most (3)" in full.reason


def test_where_the_broker_ignores_excluded_sites_one_plain_retry_then_stop():
    d = site_failure(vo="wlcg")
    first = POLICY(d, 0)
    assert (first.action, first.new_params) == (RETRY, {})
    assert "ignores excludedSite: one plain retry" in first.reason
    second = POLICY(d, 1)
    assert (second.action, second.suggested) == (STOP, {"excludedSite": ["SITE_A"]})


def test_site_exclusion_can_be_forced_either_way():
    assert DefaultRetryPolicy(exclude_sites=True)(site_failure(vo="wlcg"), 0).new_params == {"excludedSite": ["SITE_A"]}
    assert DefaultRetryPolicy(exclude_sites=False)(site_failure(), 0).new_params == {}


def test_site_errors_with_no_site_to_exclude_get_one_plain_retry():
    jobs = [job(site="SITE_A", pilotErrorCode=1137)] * 3 + [job("finished", site="SITE_A")]
    d = diagnose(info(), jobs)
    assert d.bad_sites == ()
    assert (POLICY(d, 0).action, POLICY(d, 1).action) == (RETRY, STOP)


# --- user code, lost files, attempts, unknown ---------------------------------------------------


def test_user_code_stops_at_once_with_the_reason():
    d = diagnose(info(), spread(40, transExitCode=1, pilotErrorCode=1305))
    decision = POLICY(d, 0)
    assert (decision.action, decision.acts, decision.final) == (STOP, False, True)
    assert decision.reason.startswith("40 of 40 failed jobs: payload exit code 1 at 3 sites; not retried: the "
                                      "payload's own exit code (1) fails on every site")


def test_lost_files_are_recovered_not_retried():
    d = diagnose(info("done", nFilesFailed=0), [job("finished")], lost_files=3)
    decision = POLICY(d, 0)
    assert decision.action == RECOVER and decision.new_params == {}


def test_too_few_attempts_retry_and_the_exhausted_task_needs_the_production_role():
    dialog = "exhausted since the task was incomplete and didn't reach the goal"
    exhausted = diagnose(info("exhausted", errorDialog=dialog), [])
    assert POLICY(exhausted, 0).action == STOP
    assert "only for the production role" in POLICY(exhausted, 0).reason
    assert DefaultRetryPolicy(production_role=True)(exhausted, 0).action == RETRY
    failed = dataclasses.replace(exhausted, status="failed")
    assert POLICY(failed, 0).action == RETRY


def test_increase_attempts_only_for_a_running_task_and_the_production_role():
    running = Diagnosis(Category.TOO_FEW_ATTEMPTS, "3 of 3 failed jobs at their last attempt", status="running")
    decision = DefaultRetryPolicy(production_role=True, attempts_increase=3)(running, 0)
    assert (decision.action, decision.increase) == (INCREASE_ATTEMPTS, 3)
    assert POLICY(running, 0).action == STOP


def test_unknown_gets_one_plain_retry_then_stops():
    d = diagnose(info(), spread(4, pilotErrorCode=9999))
    assert (POLICY(d, 0).action, POLICY(d, 0).new_params, POLICY(d, 1).action) == (RETRY, {}, STOP)


def test_a_plain_retry_of_an_exhausted_task_is_not_asked_without_the_production_role():
    d = diagnose(info("exhausted"), spread(4, pilotErrorCode=9999))
    assert POLICY(d, 0).action == STOP
    assert DefaultRetryPolicy(production_role=True)(d, 0).action == RETRY


# --- the bounds every rule shares -------------------------------------------------------------


@pytest.mark.parametrize("diagnosis", [memory(), site_failure(), walltime(nFilesPerJob=4),
                                       diagnose(info("done"), [job("finished")], lost_files=2)])
def test_max_retries_ends_every_rule(diagnosis):
    assert POLICY(diagnosis, 2).action != STOP
    decision = POLICY(diagnosis, 3)
    assert decision.action == STOP
    assert decision.reason.endswith("; all 3 automatic retries used")


def test_pandas_own_refusal_stops_everything():
    dialog = "retry was rejected due to too many attempts (10 >= 10) for some jobs"
    d = diagnose(info("failed", errorDialog=dialog), spread(5, pilotErrorCode=1212))
    decision = POLICY(d, 0)
    assert decision.action == STOP and "PanDA accepts no further retry" in decision.reason


@pytest.mark.parametrize("status", ["broken", "aborted", "done"])
def test_statuses_panda_does_not_retry_stop(status):
    decision = POLICY(memory(status=status), 0)
    assert decision.action == STOP
    assert f"and this one is {status}" in decision.reason


@pytest.mark.parametrize("bad", [dict(max_retries=-1), dict(memory_factor=1), dict(memory_ceiling=0),
                                 dict(walltime_factor="2"), dict(max_excluded_sites=True)])
def test_the_policys_bounds_are_checked(bad):
    with pytest.raises(PandaInputError):
        DefaultRetryPolicy(**bad)


# --- decisions and the keys PanDA applies -----------------------------------------------------


def test_a_decision_refuses_keys_panda_drops_before_anything_is_sent():
    with pytest.raises(PandaInputError, match="PanDA does not apply cpuTime, walltime on a retry"):
        Decision(RETRY, "why", {"walltime": 7200, "cpuTime": 10, "ramCount": 4000})
    assert Decision(RETRY, "why", {"dsForIN": "data:x", "nFilesPerJob": 2, "excludedSite": ["A"]}).acts


@pytest.mark.parametrize("kwargs", [dict(action="rerun", reason="x"),
                                    dict(action=STOP, reason="x", new_params={"ramCount": 1}),
                                    dict(action=INCREASE_ATTEMPTS, reason="x"),
                                    dict(action=RETRY, reason="x", new_params=["ramCount"])])
def test_malformed_decisions_are_refused(kwargs):
    with pytest.raises(PandaInputError):
        Decision(**kwargs)


def test_the_retry_keys_are_the_servers():
    assert {"ramCount", "excludedSite", "nFilesPerJob", "loopingCheck", "priority"} <= RETRY_KEYS
    assert not {"walltime", "cpuTime", "maxWalltime", "coreCount"} & RETRY_KEYS
    assert refused_keys({"ramCount": 1, "dsForIN": "x", "maxWalltime": 2}) == ["maxWalltime"]
    assert check_retry_params(None) == {}


def test_a_decision_goes_into_xcom():
    decision = Decision(RETRY, "r", {"ramCount": 6000})
    assert decision.to_dict() == {"action": "retry", "reason": "r", "new_params": {"ramCount": 6000},
                                  "increase": 0, "suggested": {}, "final": False}


# --- the simple form and the custom form ------------------------------------------------------


def test_the_simple_policy_retries_with_the_same_params_every_time():
    policy = SimplePolicy(2, {"ramCount": 4000})
    d = diagnose(info(), spread(4, transExitCode=1))  # whatever went wrong
    first, second, third = (policy(d, n) for n in range(3))
    assert (first.action, first.new_params, second.new_params) == (RETRY, {"ramCount": 4000}, {"ramCount": 4000})
    assert first.reason == "4 of 4 failed jobs: payload exit code 1 at 3 sites; automatic retry 1 of 2 with " \
                           "{'ramCount': 4000}"
    assert (third.action, third.reason.endswith("all 2 automatic retries used")) == (STOP, True)
    assert SimplePolicy(1)(dataclasses.replace(d, status="broken"), 0).action == STOP


def test_the_simple_policy_refuses_what_panda_would_drop():
    with pytest.raises(PandaInputError, match="retry_new_params: PanDA does not apply walltime"):
        SimplePolicy(1, {"walltime": 3600})
    with pytest.raises(PandaInputError):
        SimplePolicy(-1)


def test_policy_for_picks_the_operators_policy():
    assert policy_for() is None and policy_for(retry_new_params={"ramCount": 1}) is None
    assert policy_for(auto_retries=2, retry_new_params={"ramCount": 1}) == SimplePolicy(2, {"ramCount": 1})
    assert policy_for(POLICY) is POLICY
    with pytest.raises(PandaInputError):
        policy_for(POLICY, auto_retries=1)
    with pytest.raises(PandaInputError):
        policy_for("default")


def test_a_custom_policy_is_a_few_lines():
    def double_memory_twice(diagnosis: Diagnosis, attempts_so_far: int) -> Decision:
        if diagnosis.category == Category.MEMORY and attempts_so_far < 2:
            return Decision(RETRY, diagnosis.evidence, {"ramCount": 2 * (diagnosis.ram_count or 2000)})
        return DefaultRetryPolicy()(diagnosis, attempts_so_far)

    assert isinstance(double_memory_twice, RetryPolicy) and isinstance(POLICY, RetryPolicy)
    assert double_memory_twice(memory(4000), 0).new_params == {"ramCount": 8000}
    assert double_memory_twice(memory(4000), 2).new_params == {"ramCount": 6000}


def test_only_the_tasks_own_code_is_final():
    """A stop for the task's own code tells the operator to spend no Airflow retry either."""
    assert Decision(STOP, "r", final=True).final and not Decision(STOP, "r").final
