"""The shared parameters' checks (arguments.py): each fails before any request, naming the parameter."""

from __future__ import annotations

import math

import pytest

from airflow_provider_panda import arguments
from airflow_provider_panda.exceptions import PandaInputError


@pytest.mark.parametrize("bad", [0, -1, math.inf, math.nan, "60", True, None, arguments.MAX_POLL_INTERVAL + 1])
def test_a_bad_poll_interval_is_refused(bad):
    with pytest.raises(PandaInputError, match="poll_interval"):
        arguments.poll_interval(bad)


def test_a_poll_interval_is_a_float_and_names_its_parameter():
    assert arguments.poll_interval(5) == 5.0
    with pytest.raises(PandaInputError, match="poke_interval"):
        arguments.poll_interval(0, "poke_interval")


def test_timeout_none_waits_forever_and_zero_is_refused():
    assert arguments.timeout(None) is None
    assert arguments.timeout(3) == 3.0
    with pytest.raises(PandaInputError, match="timeout"):
        arguments.timeout(0)


def test_a_grace_may_be_zero_not_negative():
    assert arguments.grace(0) == 0.0
    with pytest.raises(PandaInputError, match="not_found_grace"):
        arguments.grace(-1)


@pytest.mark.parametrize("bad", [-1, 101, 1.5, True, "2"])
def test_auto_retries_is_a_small_integer(bad):
    with pytest.raises(PandaInputError, match="auto_retries"):
        arguments.auto_retries(bad)


def test_a_choice_names_the_choices():
    assert arguments.one_of("kill", "on_timeout", arguments.ON_TIMEOUT) == "kill"
    with pytest.raises(PandaInputError, match=r"on_timeout must be one of \('fail', 'kill', 'finish'\)"):
        arguments.one_of("abort", "on_timeout", arguments.ON_TIMEOUT)


def test_an_argument_without_effect_warns():
    with pytest.warns(UserWarning, match="X: no effect from cancel_on_kill=True here: it does not own"):
        arguments.no_effect("X", "cancel_on_kill=True", "it does not own the task")


def test_a_renamed_parameter_warns_with_the_new_name():
    with pytest.warns(DeprecationWarning, match=r"KillTaskOperator\(wait_for_termination=...\) is deprecated: "
                                                r"use wait_for_completion"):
        arguments.renamed("KillTaskOperator", "wait_for_termination", "wait_for_completion")
