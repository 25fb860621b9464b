"""The ownership decisions of SubmitTaskOperator (ownership.py), without a server or Airflow."""

from __future__ import annotations

import pytest

from airflow_provider_panda import api, ownership
from airflow_provider_panda.ownership import ADOPT, BROKEN, FAIL, REEXECUTE, RETRY, WAIT
from airflow_provider_panda.waiting import WaitSpec

OWNER = "dag/submit/run_1/3"


def test_the_owner_key_names_dag_task_run_and_map_index():
    assert ownership.instance_key("dag", "submit", "run_1", 3) == OWNER
    assert ownership.instance_key("dag", "submit", "run_1", None).endswith("/-1")


def test_a_task_is_mine_only_with_my_key():
    assert ownership.submitted_by({"raw_task_params": {ownership.OWNER_KEY: OWNER}}, OWNER)
    assert not ownership.submitted_by({"raw_task_params": {ownership.OWNER_KEY: "dag/submit/run_1/4"}}, OWNER)
    assert not ownership.submitted_by({"raw_task_params": None}, OWNER)
    assert not ownership.submitted_by({}, OWNER)


def test_the_tasks_of_a_name_split_by_owner():
    tasks = [{"jediTaskID": 7, "raw_task_params": {ownership.OWNER_KEY: OWNER}},
             {"jediTaskID": "9", "raw_task_params": {ownership.OWNER_KEY: "other"}},
             {"jediTaskID": 8}]
    mine, others = ownership.split_by_owner(tasks, OWNER)
    assert mine == [7]
    assert [t["jediTaskID"] for t in others] == ["9", 8]
    assert ownership.newest(others)["jediTaskID"] == "9"


@pytest.mark.parametrize(("entry", "expected"), [
    ({"jedi_task_id": 12, "task_name": "user.a.x"}, (12, None)),
    ({"jedi_task_id": 12, "task_name": "user.a.x.try2"}, (None, "user.a.x.try2")),
    ({"jedi_task_id": 12}, (12, None)),
    (12, (12, None)),  # the first release's entries: the id alone
    (None, (None, None)),
    ({}, (None, None)),
    (True, (None, None)),
])
def test_a_stored_task_is_reused_only_under_its_own_name(entry, expected):
    assert ownership.stored_task(entry, "user.a.x") == expected


def test_the_stored_entry_round_trips():
    assert ownership.stored_task(ownership.stored_entry(5, "n"), "n") == (5, None)


SPEC = WaitSpec.build()


@pytest.mark.parametrize(("status", "action"), [
    (None, WAIT), ("running", WAIT), ("done", WAIT), ("registered", WAIT),
    ("broken", BROKEN), ("aborted", REEXECUTE),
    ("failed", RETRY), ("finished", RETRY), ("exhausted", RETRY),
])
def test_what_an_earlier_tries_task_needs(status, action):
    assert ownership.for_earlier_task(status, SPEC) == action


def test_a_partial_success_of_an_earlier_try_is_not_retried():
    assert ownership.for_earlier_task("finished", WaitSpec.build(allow_partial=True)) == WAIT


@pytest.mark.parametrize(("if_exists", "status", "action"), [
    ("fail", "done", FAIL), ("adopt", "running", ADOPT), ("adopt", "done", ADOPT),
    ("reexecute", "done", REEXECUTE), ("reexecute", "running", FAIL),
])
def test_a_name_held_by_another_task(if_exists, status, action):
    assert ownership.when_name_taken(if_exists, status) == action
    if action == FAIL:
        assert ownership.name_taken_hint(if_exists)


def test_only_ended_tasks_are_reexecuted():
    assert set(api.RESUBMITTABLE_FROM) <= set(api.TASK_STOPPED)


@pytest.mark.parametrize(("status", "reattached", "done", "allowed", "action"), [
    ("aborted", True, 0, 0, REEXECUTE),
    ("aborted", False, 0, 2, FAIL),  # this try's own task aborted by a user: the failure stands
    ("failed", False, 0, 2, RETRY),
    ("failed", False, 2, 2, FAIL),
    ("finished", False, 1, 2, RETRY),
    ("broken", False, 0, 2, BROKEN),
    ("broken", True, 0, 0, BROKEN),
])
def test_what_a_failed_wait_asks_for(status, reattached, done, allowed, action):
    decided = ownership.after_failure(status, reattached=reattached, retries_done=done, has_policy=allowed > done)
    assert decided == action


def test_a_reexecution_asks_for_the_duplicate_check_and_the_new_parameters():
    params = ownership.reexecution_params({"taskName": "n", "uniqueTaskName": False, "ramCount": 1}, {"ramCount": 2})
    assert params == {"taskName": "n", "uniqueTaskName": True, "ramCount": 2}
