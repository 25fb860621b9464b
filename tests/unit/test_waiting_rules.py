"""The wait rules of :mod:`airflow_provider_panda.waiting`, driven without I/O.

:meth:`TaskWatch.step` is a generator: it yields what it wants read (STATUS, DETAILS, PROGRESS) and is
sent the answer. ``read`` below answers it from a dict, as a server would for one reading, and records
what was asked. Time is the ``clock`` fixture (wall and monotonic clocks that move only when told).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_panda import api, waiting
from airflow_provider_panda.exceptions import (
    PandaCallFailed,
    PandaInputError,
    PandaNotFoundError,
    PandaServerError,
    PandaTransportError,
)
from airflow_provider_panda.waiting import (
    DETAILS,
    ERROR,
    FAILURE,
    PROGRESS,
    STATUS,
    SUCCESS,
    TIMEOUT,
    StaleMark,
    TaskWatch,
    WaitSpec,
)

TASK = 4242
GRACE = waiting.NOT_FOUND_GRACE
#: StaleMark's reader of a stored mark (``from_dict`` if it gets that name, ``load`` today).
load_mark = StaleMark.load


def details(status: str, attempt: int = 1, changed: Any = "2024-05-01 10:00:00", dialog: str | None = None,
            **more: Any) -> dict[str, Any]:
    """A ``task/get_detailed_info`` answer, reduced to what the wait reads."""
    return {"jediTaskID": TASK, "status": status, "attemptNr": attempt, "stateChangeTime": changed,
            "errorDialog": dialog, "userName": "Alice Smith", **more}


def read(watch: TaskWatch, status: str | None = None, info: dict[str, Any] | None = None,
         progress: dict[str, Any] | None = None) -> tuple[str | None, list[str]]:
    """One step of ``watch`` against a server that answers ``status`` to a status read, ``info`` to a
    details read and ``progress`` to a progress read (None: "not found"): (verdict, what was asked)."""
    answers = {STATUS: status, DETAILS: info, PROGRESS: progress}
    asked: list[str] = []
    step, answer = watch.step(), None
    while True:
        try:
            request = step.send(answer)
        except StopIteration as done:
            return done.value, asked
        asked.append(request)
        answer = answers[request]


@pytest.fixture
def make(clock, log):
    """A TaskWatch started now by the fake clock."""

    def build(spec: WaitSpec | None = None, **kwargs: Any) -> TaskWatch:
        kwargs.setdefault("started", clock.mono)
        return TaskWatch(TASK, spec or WaitSpec.build(), log, **kwargs)

    return build


# --- WaitSpec -----------------------------------------------------------------------------------


def test_the_default_spec_ends_well_on_done_and_badly_on_every_default_failure():
    spec = WaitSpec.build()
    assert spec.success == ("done",)
    assert set(spec.failure) == set(api.TASK_DEFAULT_FAILURE)


def test_allow_partial_makes_finished_a_success_and_not_a_failure():
    spec = WaitSpec.build(allow_partial=True)
    assert spec.success == ("done", "finished")
    assert "finished" not in spec.failure
    assert spec.classify("finished") == SUCCESS


def test_allow_partial_does_not_repeat_finished_already_listed():
    assert WaitSpec.build(["finished", "done"], allow_partial=True).success == ("finished", "done")


def test_a_success_status_is_left_out_of_the_default_failures():
    spec = WaitSpec.build(success_statuses=["done", "exhausted"])
    assert "exhausted" not in spec.failure
    assert spec.classify("exhausted") == SUCCESS


def test_one_status_given_as_a_string_is_one_status_not_its_letters():
    assert WaitSpec.build("running").success == ("running",)


def test_an_unknown_status_is_refused_naming_it():
    with pytest.raises(PandaInputError, match=r"success statuses: unknown PanDA task status \['complete'\]"):
        WaitSpec.build(["done", "complete"])


def test_an_unknown_failure_status_is_refused_naming_it():
    with pytest.raises(PandaInputError, match=r"failure statuses: unknown .*\['oops'\]"):
        WaitSpec.build(failure_statuses=["oops"])


def test_no_success_status_is_refused():
    with pytest.raises(PandaInputError, match="must not be empty"):
        WaitSpec.build([])


def test_statuses_that_are_not_a_list_are_refused():
    with pytest.raises(PandaInputError, match="must be a list of task statuses"):
        WaitSpec.build(5)


def test_a_status_both_success_and_failure_is_refused():
    with pytest.raises(PandaInputError, match=r"\['done'\] are both success and failure"):
        WaitSpec.build(["done"], failure_statuses=["done", "failed"])


def test_explicit_failure_statuses_replace_the_defaults():
    spec = WaitSpec.build(failure_statuses=["tobroken"])
    assert spec.failure == ("tobroken",)
    assert spec.classify("tobroken") == FAILURE


@pytest.mark.parametrize("status", sorted(api.TASK_STOPPED - {"done"}))
def test_a_stopped_status_not_listed_anywhere_still_ends_the_wait_badly(status):
    assert WaitSpec(success=("done",), failure=()).classify(status) == FAILURE


@pytest.mark.parametrize("status", ["running", "registered", "pending", "toretry", "paused", None])
def test_a_status_that_is_neither_keeps_the_wait_going(status):
    assert WaitSpec.build().classify(status) is None


def test_the_any_spec_ends_on_every_status():
    spec = WaitSpec.any()
    assert all(spec.classify(s) == SUCCESS for s in api.TASK_STATUSES)


def test_the_any_spec_keeps_waiting_on_an_excluded_running_status():
    spec = WaitSpec.any(exclude=["registered", "defined"])
    assert spec.classify("registered") is None
    assert spec.classify("running") == SUCCESS


def test_the_any_spec_ends_badly_on_an_excluded_stopped_status():
    assert WaitSpec.any(exclude=["failed"]).classify("failed") == FAILURE


# --- StaleMark ----------------------------------------------------------------------------------


def test_a_mark_without_details_keeps_the_status_command_and_send_time(clock):
    mark = StaleMark.of("failed", None, "retry")
    assert (mark.status, mark.command, mark.sent_at) == ("failed", "retry", clock.wall)
    assert (mark.attempt, mark.changed, mark.dialog) == (None, None, None)
    assert not mark.checkable


def test_a_mark_with_details_keeps_attempt_change_time_and_dialog(clock):
    mark = StaleMark.of("failed", details("failed", attempt=3, dialog="boom"), "retry")
    assert (mark.attempt, mark.changed, mark.dialog) == (3, "2024-05-01 10:00:00", "boom")
    assert mark.checkable


def test_a_mark_keeps_a_datetime_change_time_as_iso_text(clock):
    mark = StaleMark.of("done", details("done", changed=datetime(2024, 5, 1, 10, 0, 0)))
    assert mark.changed == "2024-05-01T10:00:00"


def test_a_mark_ignores_an_attempt_number_that_is_not_an_integer(clock):
    mark = StaleMark.of("failed", details("failed", attempt="2", changed=None))
    assert mark.attempt is None
    assert not mark.checkable


def test_a_mark_survives_its_dict_form(clock):
    mark = StaleMark.of("finished", details("finished", attempt=2, dialog="lost files"), "file recovery")
    assert load_mark(mark.to_dict()) == mark


def test_a_mark_dict_holds_exactly_the_documented_keys(clock):
    assert set(StaleMark.of("failed", None).to_dict()) == {"status", "attempt", "changed", "dialog", "command",
                                                           "sent_at"}


def test_loading_none_gives_none_and_a_mark_gives_itself():
    mark = StaleMark("failed")
    assert load_mark(None) is None
    assert load_mark(mark) is mark


def test_loading_a_bare_status_gives_a_mark_without_time_or_details():
    assert load_mark("failed") == StaleMark("failed")


def test_loading_a_send_time_keeps_numbers_as_floats_and_drops_anything_else():
    assert load_mark({"status": "failed", "sent_at": 12}).sent_at == 12.0
    assert isinstance(load_mark({"status": "failed", "sent_at": 12}).sent_at, float)
    assert load_mark({"status": "failed", "sent_at": "12"}).sent_at is None


def test_the_newest_mark_is_the_latest_sent():
    old, new = StaleMark("failed", sent_at=10.0), StaleMark("finished", sent_at=20.0)
    assert StaleMark.newest(new, old) is new
    assert StaleMark.newest(old, None, new) is new


def test_a_mark_without_a_send_time_counts_as_the_oldest():
    timed, untimed = StaleMark("finished", sent_at=1.0), StaleMark("failed")
    assert StaleMark.newest(untimed, timed) is timed


def test_no_mark_at_all_is_no_newest_mark():
    assert StaleMark.newest() is None
    assert StaleMark.newest(None, None) is None


def test_a_mark_is_superseded_by_a_new_attempt_a_new_change_time_or_a_new_dialog():
    mark = StaleMark("failed", 1, "2024-05-01 10:00:00", None)
    assert not mark.superseded_by(details("failed"))
    assert mark.superseded_by(details("failed", attempt=2))
    assert mark.superseded_by(details("failed", changed="2024-05-01 10:05:00"))
    assert mark.superseded_by(details("failed", dialog="new error"))


def test_a_mark_taken_from_a_datetime_matches_the_same_time_read_again():
    mark = StaleMark("done", 1, datetime(2024, 5, 1, 10).isoformat())
    assert not mark.superseded_by(details("done", changed=datetime(2024, 5, 1, 10)))


# --- the ordinary wait --------------------------------------------------------------------------


def test_a_wait_without_a_mark_reads_only_the_status(make):
    assert read(make(), "running") == (None, [STATUS])


@pytest.mark.parametrize("status, verdict", [("done", SUCCESS), ("failed", FAILURE), ("exhausted", FAILURE),
                                             ("aborted", FAILURE), ("running", None)])
def test_a_reading_gives_the_specs_verdict(make, status, verdict):
    assert read(make(), status)[0] == verdict


def test_the_first_reading_asks_for_no_progress(make):
    watch = make()
    read(watch, "running")
    assert not watch.moved


def test_a_status_change_asks_for_a_progress_line_and_logs_it(make, log):
    watch = make()
    read(watch, "scouting")
    verdict, asked = read(watch, "running", progress={"nFiles": 10, "nFilesFinished": 3, "nFilesFailed": 1,
                                                     "pctFinished": 30, "attemptNr": 1})
    assert (verdict, asked) == (None, [STATUS, PROGRESS])
    assert f"PanDA task {TASK}: 3 of 10 input files finished, 1 failed (30%); attempt 1" in log.texts()


def test_the_same_status_again_asks_for_no_progress(make):
    watch = make()
    read(watch, "running")
    assert read(watch, "running")[1] == [STATUS]


def test_no_progress_is_asked_when_progress_lines_are_off(make):
    watch = make(progress=False)
    read(watch, "scouting")
    assert read(watch, "running")[1] == [STATUS]


def test_a_progress_read_that_finds_nothing_leaves_the_line_out(make, log):
    watch = make()
    read(watch, "scouting")
    assert read(watch, "running", progress=None) == (None, [STATUS, PROGRESS])
    assert not any("input files" in t for t in log.texts())


def test_each_status_change_is_logged_once_from_the_start(make, log):
    watch = make()
    read(watch, "running")
    read(watch, "running")
    read(watch, "done")
    assert log.texts() == [f"PanDA task {TASK}: (start) -> running", f"PanDA task {TASK}: running -> done"]


# --- the stale rule -----------------------------------------------------------------------------


def retry_mark(clock, status: str = "failed", **kw: Any) -> StaleMark:
    return StaleMark.of(status, details(status, **kw), "retry")


def test_a_status_read_before_a_retry_does_not_end_the_wait(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", details("failed")) == (None, [STATUS, DETAILS])
    assert watch.stale is not None


def test_the_same_status_with_a_new_attempt_ends_the_wait_a_retry_that_failed_again(make, clock, log):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", details("failed", attempt=2))[0] == FAILURE
    assert watch.stale is None
    assert f"PanDA task {TASK}: failed again (attempt 2)" in log.texts()


def test_the_same_status_with_a_new_state_change_time_ends_the_wait(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", details("failed", changed="2024-05-01 11:00:00"))[0] == FAILURE


def test_the_same_status_with_a_new_error_dialog_ends_the_wait_jedi_refused_the_retry(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", details("failed", dialog="retry refused: too many attempts"))[0] == FAILURE


def test_any_ending_status_with_the_marks_details_is_stale_not_only_the_marked_one(make, clock):
    # after a file recovery request JEDI turns done into finished by a bare UPDATE first
    watch = make(WaitSpec.build(allow_partial=True), stale=StaleMark.of("done", details("done"), "file recovery"))
    assert read(watch, "finished", details("finished"))[0] is None
    assert read(watch, "done", details("done"))[0] is None


def test_a_success_read_with_the_marks_details_is_stale_too(make, clock):
    watch = make(stale=StaleMark.of("done", details("done"), "retry"))
    assert read(watch, "done", details("done"))[0] is None


def test_the_details_status_wins_over_the_status_read_before_it(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", details("done", attempt=2))[0] == SUCCESS
    assert watch.last_status == "done"


def test_a_status_that_would_not_end_the_wait_reads_no_details_and_keeps_the_mark(make, clock):
    kill = StaleMark.of("running", details("running"), "kill")
    watch = make(WaitSpec.build(["aborted"]), stale=kill)
    assert read(watch, "running") == (None, [STATUS])
    assert watch.stale == kill
    # the mark still guards the statuses that would end the wait
    assert read(watch, "aborted", details("aborted"))[0] is None
    assert read(watch, "aborted", details("aborted", changed="2024-05-01 10:01:00"))[0] == SUCCESS


def test_another_status_without_details_lifts_a_checkable_mark_and_asks_for_confirmation(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "running")[0] is None
    assert (watch.stale, watch.confirm) == (None, True)


def test_after_a_lifted_mark_an_ending_status_is_confirmed_by_the_details(make, clock):
    watch = make(stale=retry_mark(clock))
    read(watch, "running")
    # a cached status (the shared poller's, say) from before the command still says failed
    assert read(watch, "failed", details("running", attempt=2)) == (None, [STATUS, DETAILS])
    assert read(watch, "failed", details("failed", attempt=2), progress=None)[0] == FAILURE


def test_a_mark_superseded_by_the_details_asks_for_confirmation_of_later_endings(make, clock):
    watch = make(WaitSpec.build(["done"]), stale=StaleMark.of("finished", details("finished"), "file recovery"))
    assert read(watch, "finished", details("running", attempt=2))[0] is None
    assert (watch.stale, watch.confirm) == (None, True)
    assert read(watch, "done", details("done", attempt=2))[1][:2] == [STATUS, DETAILS]


def test_a_confirmation_without_details_is_a_not_found_reading(make, clock):
    watch = make(stale=retry_mark(clock))
    read(watch, "running")
    assert read(watch, "failed", None) == (None, [STATUS, DETAILS])
    assert watch.last_status is None


def test_details_missing_under_a_checkable_mark_do_not_make_the_status_an_outcome(make, clock):
    watch = make(stale=retry_mark(clock))
    assert read(watch, "failed", None) == (None, [STATUS, DETAILS])
    assert watch.last_status is None
    assert watch.stale is not None


def test_a_stale_status_becomes_the_outcome_after_the_grace_counted_from_the_command(make, clock, log):
    mark = retry_mark(clock)
    clock.advance(GRACE + 1)
    watch = make(stale=mark)  # started just now: a grace counted from the wait's start has not run out
    assert read(watch, "failed", details("failed"))[0] == FAILURE
    assert watch.stale is None
    assert any("still failed" in t and "after the retry" in t for t in log.texts(logging.WARNING))


def test_a_stale_status_stays_stale_until_the_grace_since_the_command_is_over(make, clock):
    mark = retry_mark(clock)
    watch = make(stale=mark, started=clock.mono - 10 * GRACE)  # a wait started long before the command
    clock.advance(GRACE)
    assert read(watch, "failed", details("failed"))[0] is None
    clock.advance(1)
    assert read(watch, "failed", details("failed"))[0] == FAILURE


def test_a_mark_that_travelled_as_a_dict_keeps_its_send_time(make, clock):
    mark = retry_mark(clock).to_dict()
    clock.advance(GRACE + 1)
    watch = make(stale=mark)
    assert isinstance(watch.stale, StaleMark)
    assert read(watch, "failed", details("failed"))[0] == FAILURE


def test_a_mark_without_a_send_time_counts_the_grace_from_the_start_of_the_wait(make, clock):
    watch = make(stale="failed")
    assert read(watch, "failed")[0] is None
    clock.advance(GRACE + 1)
    assert read(watch, "failed")[0] == FAILURE


def test_a_mark_without_details_reads_none_and_holds_on_the_marked_status(make, clock):
    watch = make(stale=StaleMark.of("failed", None, "retry"))
    assert read(watch, "failed", details("done", attempt=9)) == (None, [STATUS])


def test_a_mark_without_details_ends_on_another_ending_status(make, clock):
    watch = make(stale=StaleMark.of("failed", None, "retry"))
    assert read(watch, "broken")[0] == FAILURE
    assert (watch.stale, watch.confirm) == (None, False)


def test_a_mark_without_details_is_lifted_by_any_other_status_then_the_marked_status_ends(make, clock):
    watch = make(stale=StaleMark.of("failed", None, "retry"))
    read(watch, "running")
    assert watch.stale is None
    assert read(watch, "failed", progress=None) == (FAILURE, [STATUS, PROGRESS])


# --- not found ----------------------------------------------------------------------------------


def test_a_task_never_seen_is_an_error_only_after_the_grace(make, clock, log):
    watch = make()
    assert read(watch, None)[0] is None
    clock.advance(GRACE)
    assert read(watch, None)[0] is None
    clock.advance(1)
    assert read(watch, None)[0] == ERROR
    assert sum("not visible yet" in t for t in log.texts()) == 1


def test_the_never_seen_grace_counts_from_the_start_of_the_wait(make, clock):
    watch = make(started=clock.mono - GRACE - 1)
    assert read(watch, None)[0] == ERROR


def test_a_task_seen_once_then_missing_gets_the_whole_grace_from_its_first_missing_reading(make, clock, log):
    watch = make()
    read(watch, "running")
    clock.advance(10 * GRACE)
    assert read(watch, None)[0] is None
    assert any("does not find it now" in t for t in log.texts(logging.WARNING))
    clock.advance(GRACE)
    assert read(watch, None)[0] is None
    clock.advance(1)
    assert read(watch, None)[0] == ERROR


def test_a_task_that_comes_back_gets_a_fresh_grace_when_missing_again(make, clock):
    watch = make()
    read(watch, "running")
    read(watch, None)
    clock.advance(GRACE - 1)
    read(watch, "running")
    clock.advance(2)
    assert read(watch, None)[0] is None
    assert watch.missing_since == clock.mono


def test_a_custom_grace_is_used(make, clock):
    watch = make(not_found_grace=5)
    clock.advance(6)
    assert read(watch, None)[0] == ERROR


# --- until_refined ------------------------------------------------------------------------------


def test_an_unrefined_task_counts_as_not_visible(make, log):
    watch = make(WaitSpec.any(), until_refined=True)
    info = details(api.TASK_UNREFINED, userName=api.UNREFINED_OWNER)
    assert read(watch, "registered", info) == (None, [STATUS, DETAILS])
    assert any("has not refined it yet" in t for t in log.texts())


def test_a_registered_task_with_a_real_owner_is_refined(make):
    watch = make(WaitSpec.any(), until_refined=True)
    assert read(watch, "registered", details("registered"))[0] == SUCCESS


def test_an_unrefined_task_is_taken_as_visible_after_the_grace_from_the_start(make, clock):
    watch = make(WaitSpec.any(), until_refined=True)
    info = details(api.TASK_UNREFINED, userName=api.UNREFINED_OWNER)
    clock.advance(GRACE)
    assert read(watch, "registered", info)[0] is None
    clock.advance(1)
    assert read(watch, "registered", info)[0] == SUCCESS


def test_registered_reads_no_details_when_the_wait_does_not_care_about_refinement(make):
    assert read(make(WaitSpec.any()), "registered") == (SUCCESS, [STATUS])


def test_an_unrefined_check_without_details_is_a_not_found_reading(make):
    watch = make(WaitSpec.any(), until_refined=True)
    assert read(watch, "registered", None)[0] is None
    assert watch.last_status is None


def test_until_refined_reads_no_details_for_other_statuses(make):
    assert read(make(WaitSpec.any(), until_refined=True), "running") == (SUCCESS, [STATUS])


# --- take_reading, take_reading_async, wait_until ----------------------------------------------


class Source:
    """A sync source: ``read()`` answers the status, ``client.get_task_info`` the details."""

    def __init__(self, statuses: list[Any], info: Any = None) -> None:
        self.statuses, self.info, self.client = list(statuses), info, self
        self.info_reads = 0

    def _answer(self, value: Any) -> Any:
        if isinstance(value, BaseException):
            raise value
        return value

    def read(self) -> Any:
        return self._answer(self.statuses.pop(0))

    def get_task_info(self, task_id: int) -> Any:
        self.info_reads += 1
        return self._answer(self.info)


def test_take_reading_reads_the_details_only_when_the_step_asks(make, clock):
    source = Source(["failed"], details("failed", attempt=2))
    assert waiting.take_reading(make(stale=retry_mark(clock)), source) == FAILURE
    assert source.info_reads == 1
    assert waiting.take_reading(make(), Source(["failed"])) == FAILURE


def test_a_details_read_that_finds_nothing_is_an_answer_not_an_error(make, clock):
    source = Source(["failed"], PandaNotFoundError("Task not found"))
    assert waiting.take_reading(make(stale=retry_mark(clock)), source) is None


def test_any_other_failed_details_read_is_the_readings_error(make, clock):
    source = Source(["failed"], PandaServerError(502, "bad gateway"))
    with pytest.raises(PandaServerError):
        waiting.take_reading(make(stale=retry_mark(clock)), source)


def test_a_failed_progress_read_only_leaves_the_line_out(make):
    watch = make()
    waiting.take_reading(watch, Source(["running"]))
    source = Source(["done"], PandaServerError(500, "down"))
    assert waiting.take_reading(watch, source) == SUCCESS
    assert source.info_reads == 1


def test_a_failed_status_read_propagates(make):
    with pytest.raises(PandaCallFailed):
        waiting.take_reading(make(), Source([PandaCallFailed("database error")]))


def test_a_task_source_reads_not_found_as_none():
    class Client:
        def get_task_status(self, task_id):
            raise PandaNotFoundError("Task not found")

    assert waiting.TaskSource(Client(), TASK).read() is None


def test_the_async_reading_follows_the_same_step(make, clock):
    class AsyncSource:
        def __init__(self):
            self.client = self

        async def read(self):
            return "failed"

        async def get_task_info(self, task_id):
            return details("failed")

    watch = make(stale=retry_mark(clock))
    assert asyncio.run(waiting.take_reading_async(watch, AsyncSource())) is None
    assert watch.stale is not None


def test_wait_until_reads_every_poll_interval_until_a_verdict(make, clock):
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds)

    assert waiting.wait_until(make(), Source(["running", "running", "done"]), 30, sleep=sleep) == SUCCESS
    assert slept == [30, 30]


def test_wait_until_treats_a_transient_fault_as_not_yet_and_keeps_it(make, clock, log):
    watch = make()
    fault = PandaTransportError("ConnectionResetError: reset")
    seen: list[Any] = []

    def sleep(seconds):
        seen.append(watch.error)

    waiting.wait_until(watch, Source([fault, "done"]), 1, sleep=sleep)
    assert seen == [fault]
    assert watch.error is None
    assert any("status read failed" in t for t in log.texts(logging.WARNING))


def test_wait_until_lets_a_definite_error_through(make):
    with pytest.raises(PandaCallFailed):
        waiting.wait_until(make(), Source([PandaCallFailed("permission")]), 1, sleep=lambda s: None)


def test_wait_until_times_out_once_the_end_time_has_passed(make, clock):
    end = clock.wall + 90
    verdict = waiting.wait_until(make(), Source(["running"] * 10), 30, end_time=end, sleep=clock.advance)
    assert verdict == TIMEOUT
    assert clock.wall == end


def test_wait_until_prefers_a_verdict_read_at_the_end_time_over_a_timeout(make, clock):
    verdict = waiting.wait_until(make(), Source(["done"]), 30, end_time=clock.wall - 1, sleep=clock.advance)
    assert verdict == SUCCESS


# --- what a failed wait says --------------------------------------------------------------------


@pytest.mark.parametrize("info", [None, {}, {"nFiles": 0}, {"nFiles": "10"}, {"nFilesFinished": 3}])
def test_no_progress_line_without_a_file_count(info):
    assert waiting.progress_line(info) == ""


def test_a_progress_line_counts_missing_numbers_as_zero_and_leaves_out_attempt_zero():
    assert waiting.progress_line({"nFiles": 4, "attemptNr": 0}) == "0 of 4 input files finished, 0 failed (0%)"


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {"jobStatus": status, **fields}


def test_job_counts_count_each_status_and_skip_unknown_jobs():
    jobs = [job("failed"), job("finished"), job("failed"), None, {}]
    assert waiting.job_counts(jobs) == {"failed": 2, "finished": 1}


def test_top_errors_take_the_first_error_field_in_order_and_count_only_failed_jobs():
    jobs = [job("failed", exeErrorCode=65, exeErrorDiag="segfault", pilotErrorCode=1305, pilotErrorDiag="stage-in"),
            job("failed", exeErrorCode=65, exeErrorDiag="segfault"),
            job("cancelled"),
            job("finished", exeErrorCode=1, exeErrorDiag="ignored"),
            None]
    assert waiting.top_errors(jobs) == [("pilotErrorCode 1305: stage-in", 1), ("exeErrorCode 65: segfault", 1),
                                        ("job cancelled", 1)]


def test_top_errors_keep_the_commonest_up_to_the_limit():
    jobs = [job("failed", ddmErrorCode=2, ddmErrorDiag="x")] * 3 + [job("closed")] * 2 + [job("failed")]
    assert waiting.top_errors(jobs, limit=2) == [("ddmErrorCode 2: x", 3), ("job closed", 2)]


def test_an_attempt_reason_says_panda_dialog_and_the_failed_share():
    reason = waiting.attempt_reason({"errorDialog": "too many failures"},
                                    [job("failed", exeErrorCode=8, exeErrorDiag="oom"), job("finished")])
    assert reason == "PanDA says: too many failures; 1 of the 2 newest jobs failed: 1 x exeErrorCode 8: oom"


def test_an_attempt_reason_without_anything_says_so():
    nothing = "PanDA gave no reason (no errorDialog, no failed job read)"
    assert waiting.attempt_reason(None, None) == nothing
    assert waiting.attempt_reason({"errorDialog": ""}, []) == nothing


def test_an_attempt_reason_cuts_a_long_dialog():
    assert len(waiting.attempt_reason({"errorDialog": "x" * 1000}, None)) == len("PanDA says: ") + 300


def test_an_attempt_reason_with_jobs_but_no_failure_names_no_errors():
    assert waiting.attempt_reason(None, [job("finished")]) == "0 of the 1 newest jobs failed"


@pytest.mark.parametrize("attempt, line", [
    ({"attempt": 1, "status": "failed", "reason": "oom"}, "attempt 1 ended failed: oom"),
    ({"attempt": 0, "status": "exhausted", "reason": "r"}, "attempt 0 ended exhausted: r"),
    ({"status": "failed", "reason": "r"}, "attempt ? ended failed: r"),
])
def test_an_attempt_line(attempt, line):
    assert waiting.attempt_line(attempt) == line


def test_a_failure_message_holds_status_dialog_progress_jobs_attempts_next_step_and_monitor():
    info = {"errorDialog": "2 files failed", "nFiles": 10, "nFilesFinished": 8, "nFilesFailed": 2,
            "pctFinished": 80, "attemptNr": 2}
    jobs = [job("failed", exeErrorCode=65, exeErrorDiag="segfault"), job("finished")]
    attempts = [{"attempt": 1, "status": "failed", "reason": "oom", "retried_with": {"ramCount": 4000}},
                {"attempt": 2, "status": "failed", "reason": "x"}]
    text = waiting.failure_message(TASK, "finished", info, jobs, "https://mon/task/4242/", attempts)
    assert text.splitlines() == [
        f"PanDA task {TASK} ended finished.",
        "  PanDA says: 2 files failed",
        "  8 of 10 input files finished, 2 failed (80%); attempt 2",
        "  1 of the 2 newest jobs failed.",
        "  1 x exeErrorCode 65: segfault",
        "  Earlier attempts (2):",
        "    attempt 1 ended failed: oom; retried with {'ramCount': 4000}",
        "    attempt 2 ended failed: x; retried",
        f"  Next: {waiting.NEXT_STEP['finished']}",
        "Monitor: https://mon/task/4242/",
    ]


def test_a_failure_message_without_details_still_names_the_status_and_the_monitor():
    text = waiting.failure_message(TASK, "aborting", None, None, "M")
    assert text == f"PanDA task {TASK} ended aborting.\nMonitor: M"


@pytest.mark.parametrize("status", ["failed", "finished", "exhausted", "broken", "aborted"])
def test_every_bad_end_has_a_next_step(status):
    assert f"Next: {waiting.NEXT_STEP[status]}" in waiting.failure_message(TASK, status, None, None, "M")


def test_a_cancellation_landing_as_the_step_completes_is_not_swallowed():
    """The triggerer cancels a trigger with a message ("user action": a mark or clear) and calls its
    on_kill only if that cancellation comes out of the trigger. One that lands in the same loop turn
    as the step's answer must still come out, message and all (asyncio.wait_for before Python 3.12
    returns the answer instead, and the trigger waits on)."""

    async def scenario():
        step = asyncio.get_running_loop().create_future()
        waiter = asyncio.ensure_future(waiting.within(step, 60))
        await asyncio.sleep(0)  # the waiter awaits the step
        step.set_result("running")
        waiter.cancel("user action")
        with pytest.raises(asyncio.CancelledError) as cancelled:
            await waiter
        return cancelled.value.args

    assert asyncio.run(scenario()) == ("user action",)


def test_within_returns_none_at_its_limit_and_the_answer_before_it():
    async def scenario():
        never = asyncio.get_running_loop().create_future()
        answered = asyncio.get_running_loop().create_future()
        answered.set_result("done")
        return await waiting.within(never, 0.01), await waiting.within(answered, 60), never.cancelled()

    assert asyncio.run(scenario()) == (None, "done", True)
