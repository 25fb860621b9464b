"""Each PanDA call of :mod:`airflow_provider_panda.calls`: its validation (bad input fails before any
request is made) and how the server's answers (shapes from ``../shared/panda-api.md`` and the local
server's messages) become values or typed errors. No request is sent: a Call is plain data."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_panda import api, calls
from airflow_provider_panda.api import CommandCode, SubmitCode
from airflow_provider_panda.arguments import number_in_range  # noqa: E402
from airflow_provider_panda.exceptions import (
    PandaCallFailed,
    PandaCommandRejected,
    PandaDuplicateTaskError,
    PandaInputError,
    PandaNotFoundError,
    PandaPermissionError,
    PandaResponseError,
)
from airflow_provider_panda.testing import messages


def env(success: bool, message: str = "", data: Any = None) -> dict[str, Any]:
    return messages.envelope(success, message, data)


PARAMS = {"taskName": "user.alice.unit.1", "uniqueTaskName": True, "vo": "atlas"}

# --- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, "12", 12.0, None, [1]])
def test_an_id_that_is_not_an_int_is_refused_with_its_type(value):
    with pytest.raises(PandaInputError, match=f"must be a positive integer, got {type(value).__name__}"):
        calls.check_id(value)


@pytest.mark.parametrize("value", [0, -1, 2**63])
def test_an_id_out_of_range_is_refused(value):
    with pytest.raises(PandaInputError, match="below 2\\*\\*63"):
        calls.check_id(value)


def test_the_largest_id_is_accepted():
    assert calls.check_id(2**63 - 1) == 2**63 - 1


def test_an_id_error_names_what_was_checked():
    with pytest.raises(PandaInputError, match="^parent_task_id must"):
        calls.check_id(0, "parent_task_id")


@pytest.mark.parametrize("value, expected", [("12345", 12345), (" 42 ", 42), (7, 7)])
def test_a_rendered_template_string_of_digits_is_a_task_id(value, expected):
    assert calls.as_task_id(value) == expected


@pytest.mark.parametrize("value", ["", "abc", "-5", "1.5", "0", "None", "1e3"])
def test_a_string_that_is_not_a_task_id_is_refused(value):
    with pytest.raises(PandaInputError):
        calls.as_task_id(value)


@pytest.mark.parametrize("value", ["12", b"12", {1: 2}, 12, None])
def test_job_ids_that_are_not_a_list_are_refused(value):
    with pytest.raises(PandaInputError, match="must be a list of positive integers"):
        calls.check_ids(value)


def test_no_job_ids_are_refused():
    with pytest.raises(PandaInputError, match="must not be empty"):
        calls.check_ids([])


def test_a_bad_job_id_among_good_ones_is_refused_naming_the_list():
    with pytest.raises(PandaInputError, match="^each of job_ids must be a positive integer"):
        calls.check_ids([1, 2, True])


def test_job_ids_from_any_iterable_are_a_list():
    assert calls.check_ids(i for i in (3, 4)) == [3, 4]


def test_more_job_ids_than_one_call_takes_are_refused():
    calls.check_ids(range(1, api.MAX_JOB_IDS_PER_CALL + 1))
    with pytest.raises(PandaInputError, match=f"at most {api.MAX_JOB_IDS_PER_CALL}"):
        calls.check_ids(range(1, api.MAX_JOB_IDS_PER_CALL + 2))


def test_many_job_ids_are_cut_into_chunks_one_call_takes():
    chunks = calls.job_id_chunks(range(1, 2 * api.MAX_JOB_IDS_PER_CALL + 2))
    assert [len(c) for c in chunks] == [api.MAX_JOB_IDS_PER_CALL, api.MAX_JOB_IDS_PER_CALL, 1]
    assert chunks[1][0] == api.MAX_JOB_IDS_PER_CALL + 1


@pytest.mark.parametrize("value", [[], "1,2", [0]])
def test_chunking_refuses_what_check_ids_refuses(value):
    with pytest.raises(PandaInputError):
        calls.job_id_chunks(value)


# --- task parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize("params, words", [
    ([("taskName", "x")], "must be a dict, got list"),
    ({}, "non-empty string 'taskName'"),
    ({"taskName": "  "}, "non-empty string 'taskName'"),
    ({"taskName": 5}, "non-empty string 'taskName'"),
    ({"taskName": "t", "uniqueTaskName": "true"}, "'uniqueTaskName' must be true or false"),
    ({"taskName": "t", "nEvents": math.nan}, "JSON-serialisable"),
    ({"taskName": "t", "sites": {"a", "b"}}, "JSON-serialisable"),
])
def test_bad_task_parameters_are_refused(params, words):
    with pytest.raises(PandaInputError) as info:
        calls.check_task_params(params)
    assert words in str(info.value)


def test_task_parameters_larger_than_what_is_sent_are_refused(monkeypatch):
    monkeypatch.setattr(calls, "MAX_TASK_PARAMS_BYTES", 100)
    calls.check_task_params({"taskName": "t", "x": "a" * 50})
    with pytest.raises(PandaInputError, match="at most 100 are sent"):
        calls.check_task_params({"taskName": "t", "x": "a" * 100})


def test_good_task_parameters_are_returned_as_they_are():
    assert calls.check_task_params(PARAMS) is PARAMS


# --- every call refuses bad input before a request exists ---------------------------------------

BAD_CALLS = [
    ("status of a string id", lambda: calls.get_task_status("12")),
    ("parameters of id 0", lambda: calls.get_task_params(0)),
    ("job ids of a bool", lambda: calls.get_job_ids(True)),
    ("kill of a negative id", lambda: calls.kill_task(-1)),
    ("finish with soft as text", lambda: calls.finish_task(1, soft="no")),
    ("retry with new params as a list", lambda: calls.retry_task(1, new_params=[("ramCount", 2000)])),
    ("retry with NaN new params", lambda: calls.retry_task(1, new_params={"ramCount": math.nan})),
    ("resume of a float id", lambda: calls.resume_task(1.0)),
    ("reactivate of None", lambda: calls.reactivate_task(None)),
    ("details of a huge id", lambda: calls.get_task_info(2**64)),
    ("submit without taskName", lambda: calls.submit_task({"vo": "atlas"})),
    ("submit with parent 0", lambda: calls.submit_task(PARAMS, parent_task_id=0)),
    ("datasets of one type as text", lambda: calls.get_datasets_and_files(1, "output")),
    ("datasets of no type", lambda: calls.get_datasets_and_files(1, [])),
    ("datasets of an upper-case type", lambda: calls.get_datasets_and_files(1, ["Output"])),
    ("datasets of a type with a space", lambda: calls.get_datasets_and_files(1, ["out put"])),
    ("digest with include_parameters 1", lambda: calls.get_task_details(1, include_parameters=1)),
    ("digest with include_status 'yes'", lambda: calls.get_task_details(1, include_status="yes")),
    ("lookup of an empty name", lambda: calls.find_tasks_by_name(" ")),
    ("lookup of no name", lambda: calls.find_tasks_by_name(None)),
    ("modified since yesterday", lambda: calls.get_tasks_modified_since("yesterday")),
    ("modified since a number", lambda: calls.get_tasks_modified_since(1715000000)),
    ("modified since an ISO time", lambda: calls.get_tasks_modified_since("2024-05-01T10:00:00")),
    ("modified since with min id -1", lambda: calls.get_tasks_modified_since("2024-05-01 10:00:00", -1)),
    ("job status of nothing", lambda: calls.get_job_status([])),
    ("full job status of text", lambda: calls.get_full_job_status("1,2")),
    ("kill jobs of a bad id", lambda: calls.kill_jobs([1, 0])),
    ("metadata of a string id", lambda: calls.get_user_job_metadata("1")),
    ("job command to job 0", lambda: calls.send_command_to_job(0, "kill")),
    ("empty job command", lambda: calls.send_command_to_job(1, "  ")),
    ("job command too long", lambda: calls.send_command_to_job(1, "x" * (api.MAX_PILOT_COMMAND_LENGTH + 1))),
    ("recovery with dry_run 0", lambda: calls.send_file_recovery_request(1, dry_run=0)),
]


@pytest.mark.parametrize("make", [c[1] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_a_call_with_bad_input_fails_before_any_request(make):
    with pytest.raises(PandaInputError):
        make()


def test_a_job_command_of_the_pilots_length_limit_is_accepted():
    call = calls.send_command_to_job(1, "x" * api.MAX_PILOT_COMMAND_LENGTH)
    assert call.payload == {"job_id": 1, "command": "x" * api.MAX_PILOT_COMMAND_LENGTH}


# --- requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, endpoint, payload", [
    (lambda: calls.hello(), api.IS_ALIVE, {}),
    (lambda: calls.get_task_status(5), api.TASK_GET_STATUS, {"task_id": 5}),
    (lambda: calls.kill_task(5), api.TASK_KILL, {"task_id": 5}),
    (lambda: calls.finish_task(5, soft=True), api.TASK_FINISH, {"task_id": 5, "soft": True}),
    (lambda: calls.retry_task(5), api.TASK_RETRY, {"task_id": 5}),
    (lambda: calls.retry_task(5, {}), api.TASK_RETRY, {"task_id": 5}),
    (lambda: calls.retry_task(5, {"ramCount": 4000}), api.TASK_RETRY,
     {"task_id": 5, "new_parameters": {"ramCount": 4000}}),
    (lambda: calls.resume_task(5), api.TASK_RESUME, {"task_id": 5}),
    (lambda: calls.reactivate_task(5), api.TASK_REACTIVATE, {"task_id": 5}),
    (lambda: calls.get_task_info(5), api.TASK_DETAILED_INFO, {"task_id": 5}),
    (lambda: calls.get_datasets_and_files(5), api.TASK_DATASETS_AND_FILES,
     {"task_id": 5, "dataset_types": ["input", "pseudo_input"]}),
    (lambda: calls.get_datasets_and_files(5, ("output", "log")), api.TASK_DATASETS_AND_FILES,
     {"task_id": 5, "dataset_types": ["output", "log"]}),
    (lambda: calls.get_task_details(5), api.TASK_DETAILS,
     {"task_id": 5, "include_parameters": False, "include_status": False}),
    (lambda: calls.submit_task(PARAMS), api.TASK_SUBMIT, {"task_parameters": PARAMS, "parent_tid": None}),
    (lambda: calls.submit_task(PARAMS, 9), api.TASK_SUBMIT, {"task_parameters": PARAMS, "parent_tid": 9}),
    (lambda: calls.get_job_status([1, 2]), api.JOB_DESCRIPTION, {"job_ids": [1, 2]}),
    (lambda: calls.get_full_job_status([1]), api.JOB_DESCRIPTION_ARCHIVE, {"job_ids": [1]}),
    (lambda: calls.kill_jobs([1]), api.JOB_KILL, {"job_ids": [1]}),
    (lambda: calls.get_user_job_metadata(5), api.JOB_METADATA, {"task_id": 5}),
    (lambda: calls.send_file_recovery_request(5), api.FILE_RECOVERY, {"task_id": 5, "dry_run": False}),
    (lambda: calls.validate_cache_file(10, 99), api.FILE_VALIDATE, {"file_size": 10, "checksum": 99}),
])
def test_each_call_goes_to_its_endpoint_with_its_payload(make, endpoint, payload):
    call = make()
    assert (call.endpoint, call.payload) == (endpoint, payload)


def test_modified_since_takes_a_datetime_as_the_servers_time_format():
    call = calls.get_tasks_modified_since(datetime(2024, 5, 1, 9, 8, 7))
    assert call.payload == {"since": "2024-05-01 09:08:07"}


def test_modified_since_takes_min_task_id_zero_as_all_tasks():
    assert calls.get_tasks_modified_since("2024-05-01 09:08:07", 0).payload["min_task_id"] == 0
    assert calls.get_tasks_modified_since("2024-05-01 09:08:07", 77).payload["min_task_id"] == 77


def test_a_plain_name_lookup_is_sent_as_an_equality_filter():
    call = calls.find_tasks_by_name("user.alice.ana.v1")
    assert json.loads(call.payload["filters"]) == {"taskName": "user.alice.ana.v1"}


@pytest.mark.parametrize("name", ["user.alice.(x)", "user.alice.a+b", "user.alice.a|b", "user.alice.a$"])
def test_a_name_the_server_would_read_as_a_regex_is_anchored_and_escaped(name):
    import re

    sent = json.loads(calls.find_tasks_by_name(name).payload["filters"])["taskName"]
    assert sent.startswith("^") and sent.endswith("$")
    assert re.fullmatch(sent, name)
    assert not re.fullmatch(sent, name + "x")


def test_an_upload_goes_to_the_cache_as_a_file_part_when_asked():
    call = calls.upload_cache_file("sources.x.tar.gz", b"data", use_cache_server=True)
    assert call.cache and call.endpoint == api.FILE_UPLOAD
    assert call.files == {"file": ("sources.x.tar.gz", b"data", "application/octet-stream")}
    assert not calls.upload_cache_file("a", b"").cache


# --- what is safe to send twice -----------------------------------------------------------------


@pytest.mark.parametrize("params, repeatable", [
    ({"taskName": "t", "uniqueTaskName": True}, True),
    ({"taskName": "t", "uniqueTaskName": True, "taskType": "anal"}, True),
    ({"taskName": "t", "uniqueTaskName": True, "taskType": "prod"}, False),
    ({"taskName": "t", "uniqueTaskName": False}, False),
    ({"taskName": "t"}, False),
])
def test_a_submission_is_resent_only_when_the_server_checks_it_for_duplicates(params, repeatable):
    assert calls.submit_task(params).idempotent is repeatable


def test_reads_and_commands_are_safe_to_resend():
    assert all(c.idempotent for c in (calls.get_task_status(1), calls.kill_task(1), calls.retry_task(1),
                                      calls.get_job_status([1]), calls.send_file_recovery_request(1)))


# --- answers ------------------------------------------------------------------------------------


def test_a_status_answer_is_the_status():
    assert calls.get_task_status(1).interpret(env(True, data="running")) == "running"


def test_an_unknown_task_is_not_found():
    with pytest.raises(PandaNotFoundError) as info:
        calls.get_task_status(1).interpret(env(False, messages.MESSAGE_TASK_NOT_FOUND))
    assert info.value.server_message == messages.MESSAGE_TASK_NOT_FOUND


def test_an_answer_of_the_wrong_type_is_a_response_error():
    with pytest.raises(PandaResponseError, match="task status: expected .*str.*sent int"):
        calls.get_task_status(1).interpret(env(True, data=3))
    with pytest.raises(PandaResponseError):
        calls.get_job_ids(1).interpret(env(True, data={"1": 2}))
    with pytest.raises(PandaResponseError):
        calls.get_task_info(1).interpret(env(True, data=None))


@pytest.mark.parametrize("message, kind", [
    (api.MESSAGE_TASK_OWNER, PandaPermissionError),
    (api.MESSAGE_PROD_ROLE, PandaPermissionError),
    ("Task not found", PandaNotFoundError),
    ("jediTaskID=5 NOT FOUND", PandaNotFoundError),
    (messages.MESSAGE_NO_DETAILS, PandaNotFoundError),
    ("database error", PandaCallFailed),
])
def test_a_failed_answer_becomes_its_typed_error(message, kind):
    error = calls.failed(env(False, message, data=4))
    assert type(error) is kind
    assert (error.server_message, error.data) == (message, 4)


def test_a_failed_answer_without_a_message_still_explains_itself():
    assert "success: false without a message" in str(calls.failed(env(False)))


def test_the_permission_message_must_be_the_servers_exactly():
    assert type(calls.failed(env(False, "maybe " + api.MESSAGE_TASK_OWNER))) is PandaCallFailed


@pytest.mark.parametrize("make", [calls.kill_task, calls.finish_task, calls.resume_task, calls.reactivate_task,
                                  calls.retry_task])
def test_a_registered_command_returns_the_servers_message(make):
    text = messages.command_registered_message("kill", 5)
    assert make(5).interpret(env(True, text, int(CommandCode.REGISTERED))) == text


def test_a_command_on_a_missing_task_is_not_found():
    with pytest.raises(PandaNotFoundError):
        calls.kill_task(5).interpret(env(False, messages.command_not_found_message(5), int(CommandCode.NOT_FOUND)))


@pytest.mark.parametrize("code", [CommandCode.SERVER_ERROR, CommandCode.PERMISSION_DENIED, CommandCode.BAD_STATUS])
def test_a_refused_command_names_its_code_and_action(code):
    text = messages.command_rejected_message("finish", "done")
    with pytest.raises(PandaCommandRejected) as info:
        calls.finish_task(5).interpret(env(False, text, int(code)))
    assert (info.value.code, info.value.action, info.value.server_message) == (code, "finish", text)
    assert f"PanDA finish rejected with code {int(code)}" in str(info.value)


def test_a_command_answer_without_a_code_is_read_as_a_failed_call():
    with pytest.raises(PandaPermissionError):
        calls.kill_task(5).interpret(env(False, api.MESSAGE_TASK_OWNER))
    with pytest.raises(PandaCallFailed):
        calls.kill_task(5).interpret(env(True, "ok", True))  # a bool is no code


def test_a_retry_with_new_parameters_succeeds_with_the_incremental_code():
    call = calls.retry_task(5, {"ramCount": 4000})
    text = messages.submit_incremental_message(5, "failed")
    assert call.interpret(env(True, text, int(SubmitCode.INCREMENTAL))) == text
    with pytest.raises(PandaCommandRejected):
        call.interpret(env(True, "registered", 0))


def test_a_retry_without_new_parameters_succeeds_with_the_registered_code_only():
    with pytest.raises(PandaCommandRejected):
        calls.retry_task(5).interpret(env(True, "re-executed", int(SubmitCode.INCREMENTAL)))


def test_a_new_submission_answers_its_task_id():
    assert calls.submit_task(PARAMS).interpret(env(True, messages.submit_new_message(77), 77)) == 77


def test_a_submission_answer_without_data_gives_the_id_in_its_message():
    assert calls.submit_task(PARAMS).interpret(env(True, messages.submit_new_message(78))) == 78
    assert calls.submit_task(PARAMS).interpret(env(True, messages.submit_new_message(79), True)) == 79


def test_an_incremental_resubmission_answers_the_existing_task_id():
    text = messages.submit_incremental_message(80, "finished")
    assert calls.submit_task(PARAMS).interpret(env(True, text)) == 80


def test_an_accepted_submission_without_any_task_id_is_a_response_error():
    with pytest.raises(PandaResponseError, match="no jediTaskID"):
        calls.submit_task(PARAMS).interpret(env(True, "succeeded"))


@pytest.mark.parametrize("code", [SubmitCode.DUPLICATE_DEFT, SubmitCode.DUPLICATE_JEDI])
def test_a_duplicate_submission_names_the_existing_task(code):
    text = messages.submit_duplicate_message(81, "running", "user.alice.unit.1/")
    with pytest.raises(PandaDuplicateTaskError) as info:
        calls.submit_task(PARAMS).interpret(env(False, text, int(code)))
    assert (info.value.task_id, info.value.code) == (81, code)


@pytest.mark.parametrize("code", [SubmitCode.SERVER_ERROR, SubmitCode.TOO_MANY_TASKS, SubmitCode.PARENT_NOT_FOUND])
def test_a_refused_submission_keeps_its_code(code):
    with pytest.raises(PandaCommandRejected) as info:
        calls.submit_task(PARAMS).interpret(env(False, "no", int(code)))
    assert type(info.value) is PandaCommandRejected
    assert (info.value.code, info.value.action) == (code, "submit")


def test_a_failed_submission_without_a_code_is_a_failed_call():
    with pytest.raises(PandaPermissionError):
        calls.submit_task(PARAMS).interpret(env(False, api.MESSAGE_PROD_ROLE))


def test_tasks_modified_since_are_keyed_by_task_id_not_by_request_id():
    data = {"100": {"jediTaskID": 5, "status": "running"}, "101": {"jediTaskID": 6, "status": "done"},
            "102": {"status": "done"}, "103": "junk"}
    assert calls.get_tasks_modified_since("2024-05-01 00:00:00").interpret(env(True, data=data)) == {
        5: {"jediTaskID": 5, "status": "running"}, 6: {"jediTaskID": 6, "status": "done"}}


def test_tasks_modified_since_must_be_a_dict():
    with pytest.raises(PandaResponseError):
        calls.get_tasks_modified_since("2024-05-01 00:00:00").interpret(env(True, data=[]))


def test_a_recovery_request_answers_its_log_url():
    call = calls.send_file_recovery_request(5)
    answer = env(True, messages.MESSAGE_RECOVERY_ACCEPTED, {"logFileURL": "https://c/log"})
    assert call.interpret(answer) == "https://c/log"
    with pytest.raises(PandaResponseError, match="logFileURL"):
        call.interpret(env(True, messages.MESSAGE_RECOVERY_ACCEPTED, {}))


def test_a_task_without_datasets_of_those_types_has_none():
    assert calls.get_datasets_and_files(5).interpret(env(False, api.MESSAGE_NO_DATASETS)) == []


def test_datasets_and_files_are_returned_as_the_server_lists_them():
    data = [{"dataset": {"name": "user.alice.x_out.root/", "id": 1},
             "files": [{"lfn": "a.root", "scope": "user.alice", "id": 2, "status": "finished"}]}]
    assert calls.get_datasets_and_files(5, ["output"]).interpret(env(True, data=data)) == data


@pytest.mark.parametrize("data", [{"dataset": {}}, [{"files": []}], [{"dataset": "name"}], ["x"]])
def test_datasets_and_files_of_another_shape_are_a_response_error(data):
    with pytest.raises(PandaResponseError):
        calls.get_datasets_and_files(5).interpret(env(True, data=data))


def test_another_datasets_failure_is_a_failed_call():
    with pytest.raises(PandaCallFailed):
        calls.get_datasets_and_files(5).interpret(env(False, "database error"))


def test_a_name_lookup_keeps_only_tasks_of_exactly_that_name():
    found = [{"taskName": "user.alice.a", "jediTaskID": 1}, {"taskName": "user.alice.ab", "jediTaskID": 2}, "junk"]
    assert calls.find_tasks_by_name("user.alice.a").interpret(env(True, data=found)) == [found[0]]
    with pytest.raises(PandaResponseError):
        calls.find_tasks_by_name("user.alice.a").interpret(env(True, data={}))


def test_message_answers_return_the_message_or_the_failure():
    assert calls.hello().interpret(env(True, "")) == ""
    assert calls.send_command_to_job(1, "debug").interpret(env(True, "command set")) == "command set"
    with pytest.raises(PandaPermissionError):
        calls.send_command_to_job(1, "debug").interpret(env(False, api.MESSAGE_PROD_ROLE))


def test_the_cache_check_answer_is_handed_over_whole():
    answer = env(True, "FOUND:host:sources.x.tar.gz")
    assert calls.validate_cache_file(1, 2).interpret(answer) is answer


# --- the range check ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "5", None, math.nan, math.inf, -math.inf])
def test_a_range_check_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(PandaInputError, match="poll_interval must be a finite number"):
        number_in_range(value, "poll_interval", 0.01)


@pytest.mark.parametrize("value", [0.0, 10.5, -1])
def test_a_range_check_refuses_numbers_outside_the_range_naming_it(value):
    with pytest.raises(PandaInputError, match=r"timeout must be between 0.01 and 10"):
        number_in_range(value, "timeout", 0.01, 10)


@pytest.mark.parametrize("value", [0.01, 10, 5])
def test_a_range_check_includes_both_ends_and_gives_a_float(value):
    result = number_in_range(value, "x", 0.01, 10)
    assert result == value and isinstance(result, float)


def test_a_range_check_has_no_upper_end_by_default():
    assert number_in_range(1e12, "x", 0) == 1e12


# --- known bugs, pinned (strict: each turns into a failure once fixed, so the pin is removed) -------


def test_a_superscript_digit_is_refused_as_bad_input():
    with pytest.raises(PandaInputError):
        calls.as_task_id("²")


def test_a_failed_submission_whose_data_is_a_bool_is_not_a_duplicate():
    with pytest.raises(PandaCallFailed) as info:
        calls.submit_task(PARAMS).interpret(env(False, "odd answer", True))
    assert not isinstance(info.value, PandaCommandRejected)
