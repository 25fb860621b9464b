"""The facts :mod:`airflow_provider_panda.api` writes down once: status lists, which command the
server takes in which status, what makes a submission safe to repeat, and the small readers of answers
(checked against ``../shared/panda-api.md``)."""

from __future__ import annotations

from datetime import datetime

import pytest

from airflow_provider_panda import api
from airflow_provider_panda.testing import sim

STATUSES = set(api.TASK_STATUSES)


def test_task_statuses_are_listed_once_each():
    assert len(api.TASK_STATUSES) == len(STATUSES) == 30


def test_the_final_statuses_are_the_five_a_task_never_leaves():
    assert api.TASK_FINAL == {"done", "finished", "failed", "broken", "aborted"}


def test_exhausted_stops_a_wait_without_being_final():
    assert api.TASK_STOPPED == api.TASK_FINAL | {"exhausted"}
    assert "exhausted" not in api.TASK_FINAL


def test_every_status_set_names_known_statuses_only():
    named = [api.TASK_FINAL, api.TASK_STOPPED, set(api.TASK_DEFAULT_SUCCESS), set(api.TASK_DEFAULT_FAILURE),
             api.RESUBMITTABLE_FROM, sim.RETRY_ACTIVE_FROM, {api.TASK_UNREFINED},
             *api.COMMAND_REFUSED_IN.values(), *api.COMMAND_ALLOWED_FROM.values()]
    for statuses in named:
        assert set(statuses) <= STATUSES, set(statuses) - STATUSES


def test_by_default_done_is_the_only_success_and_every_other_stop_a_failure():
    assert api.TASK_DEFAULT_SUCCESS == ("done",)
    assert set(api.TASK_DEFAULT_FAILURE) == api.TASK_STOPPED - {"done"}


def test_job_final_and_failed_statuses():
    assert sim.JOB_FINAL == {"finished", "failed", "closed", "cancelled"}
    assert api.JOB_FAILED == sim.JOB_FINAL - {"finished"}


@pytest.mark.parametrize("command", ["kill", "finish"])
def test_kill_and_finish_are_refused_in_the_documented_statuses(command):
    assert api.COMMAND_REFUSED_IN[command] == {"finished", "done", "prepared", "broken", "aborted", "toabort",
                                               "aborting", "failed"}


def test_retry_is_allowed_only_from_finished_failed_or_exhausted():
    assert api.COMMAND_ALLOWED_FROM["retry"] == {"finished", "failed", "exhausted"}


def test_a_same_name_submission_re_executes_a_task_only_from_the_incexec_statuses():
    assert api.RESUBMITTABLE_FROM == api.COMMAND_ALLOWED_FROM["incexec"]
    assert api.RESUBMITTABLE_FROM == {"finished", "failed", "aborted", "done", "exhausted"}


@pytest.mark.parametrize("command, status, allowed", [
    ("kill", "running", True),
    ("kill", "exhausted", True),
    ("kill", "done", False),
    ("kill", "aborting", False),
    ("finish", "pending", True),
    ("finish", "failed", False),
    ("retry", "failed", True),
    ("retry", "exhausted", True),
    ("retry", "running", False),
    ("retry", "done", False),
    ("resume", "paused", True),
    ("resume", "running", False),
    ("incexec", "aborted", True),
    ("incexec", "running", False),
    ("reactivate", "anything", True),
])
def test_command_allowed_follows_the_refused_and_allowed_sets(command, status, allowed):
    assert sim.command_allowed(command, status) is allowed


def test_no_command_is_both_refused_in_and_allowed_from():
    assert not set(api.COMMAND_REFUSED_IN) & set(api.COMMAND_ALLOWED_FROM)


@pytest.mark.parametrize("params, repeatable", [
    ({"uniqueTaskName": True}, True),
    ({"uniqueTaskName": True, "taskType": None}, True),
    ({"uniqueTaskName": True, "taskType": "anal"}, True),
    ({"uniqueTaskName": True, "taskType": "user"}, False),
    ({"uniqueTaskName": True, "taskType": "prod"}, False),
    ({"uniqueTaskName": "true"}, False),
    ({"uniqueTaskName": 1}, False),
    ({"uniqueTaskName": False}, False),
    ({}, False),
])
def test_a_submission_is_repeatable_only_with_unique_names_and_the_checked_task_type(params, repeatable):
    assert api.submission_is_repeatable(params) is repeatable


@pytest.mark.parametrize("message, task_id", [
    ("succeeded. new jediTaskID=123", 123),
    ("jediTaskID=45 is in the running state for outDS=user.a.b/", 45),
    ("no id here", None),
    ("", None),
    (None, None),
])
def test_the_task_id_a_message_names(message, task_id):
    assert api.task_id_in_message(message) == task_id


def test_an_incremental_message_begins_with_the_prefix():
    assert api.is_incremental_message(api.INCREMENTAL_PREFIX + " jediTaskID=5 will be re-executed")
    assert not api.is_incremental_message("succeeded. " + api.INCREMENTAL_PREFIX)
    assert not api.is_incremental_message(None)


def test_a_server_datetime_is_decoded_and_anything_else_is_kept():
    assert api.decode_special({"__datetime__": "2024-05-01T10:00:00"}) == datetime(2024, 5, 1, 10)
    other = {"__datetime__": "2024-05-01T10:00:00", "x": 1}
    assert api.decode_special(other) is other


@pytest.mark.parametrize("base, task_id, url", [
    ("https://bigpanda.cern.ch", 5, "https://bigpanda.cern.ch/task/5/"),
    ("https://bigpanda.cern.ch/", "6", "https://bigpanda.cern.ch/task/6/"),
])
def test_the_monitor_page_of_a_task(base, task_id, url):
    assert api.monitor_task_url(base, task_id) == url


@pytest.mark.parametrize("name, limit", [("sources.abc.tar.gz", api.SANDBOX_LIMIT),
                                         ("jobO.abc.tar.gz", api.SANDBOX_NO_BUILD_LIMIT),
                                         ("my.sources.tar.gz", api.SANDBOX_NO_BUILD_LIMIT)])
def test_the_cache_size_limit_depends_on_the_file_name(name, limit):
    assert api.upload_size_limit(name) == limit


def test_the_upload_limits_are_10_and_768_mb():
    assert (api.SANDBOX_NO_BUILD_LIMIT, api.SANDBOX_LIMIT) == (10 * 2**20, 768 * 2**20)


def test_every_endpoint_has_one_path_under_api_v1():
    paths = [e.path for e in api.ENDPOINTS]
    assert len(set(paths)) == len(paths)
    assert all(p.startswith("/api/v1/") for p in paths)


def test_only_the_alive_check_needs_no_credentials():
    assert [e.name for e in api.ENDPOINTS if not e.secure] == ["system/is_alive"]


def test_owner_commands_and_production_commands_are_the_documented_ones():
    assert {e.name for e in api.ENDPOINTS if e.task_owner} == {
        "task/kill", "task/finish", "task/retry", "file_server/upload_file_recovery_request"}
    assert {e.name for e in api.ENDPOINTS if e.production} == {"task/resume", "task/reactivate", "job/set_command"}


def test_the_submission_codes_that_succeed_and_that_are_duplicates():
    assert sim.SUBMIT_SUCCESS_CODES == {0, 3}
    assert api.SUBMIT_DUPLICATE_CODES == {1, 2}


def test_the_command_codes_are_the_servers():
    assert [int(c) for c in api.CommandCode] == [0, 1, 2, 3, 4, 5]
    assert api.CommandCode.BAD_STATUS == 4 and api.CommandCode.NOT_FOUND == 2
