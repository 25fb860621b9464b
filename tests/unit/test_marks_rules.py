"""What a command leaves for the waits after it (:mod:`airflow_provider_panda.marks`), with tiny fake
operators (``task_id``, ``upstream_list``) and a fake task instance (``xcom_pull``/``xcom_push``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_panda import marks, xcom
from airflow_provider_panda.exceptions import PandaInputError, PandaNotFoundError, PandaServerError
from airflow_provider_panda.waiting import StaleMark

TASK = 4242


@dataclass(eq=False)
class Node:
    """An Airflow task as marks sees it: its id and the tasks directly upstream of it."""

    task_id: str
    upstream_list: list[Any] = field(default_factory=list)


class CommandNode(Node):
    """A PanDA operator that sends commands (it pushes marks)."""

    pushes_command_marks = True


class CommandOperatorClass:
    pushes_command_marks = True


@dataclass(eq=False)
class MappedNode(Node):
    """A mapped operator: its class is named by ``operator_class``."""

    operator_class: Any = None


class TI:
    """A task instance's XCom: ``pushed`` by push; ``store[task_id]`` answers a pull."""

    def __init__(self, store: dict[str, Any] | None = None) -> None:
        self.store = store or {}
        self.pushed: list[tuple[str, Any]] = []
        self.pulled: list[tuple[Any, str]] = []

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed.append((key, value))

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value") -> Any:
        self.pulled.append((task_ids, key))
        return self.store.get(task_ids)


def mark(status: str = "failed", sent_at: float = 100.0, task_id: Any = TASK, **more: Any) -> dict[str, Any]:
    return {"jedi_task_id": task_id, **StaleMark(status, command="retry", sent_at=sent_at).to_dict(), **more}


# --- after_command ------------------------------------------------------------------------------


def test_no_after_command_is_no_task():
    assert marks.check_after_command(None) == ()


def test_one_task_id_is_a_tuple_of_one():
    assert marks.check_after_command("retry_it") == ("retry_it",)


def test_a_list_of_task_ids_is_kept_in_order():
    assert marks.check_after_command(["b", "a"]) == ("b", "a")


def test_a_pushed_mark_is_taken_as_it_is():
    value = mark()
    assert marks.check_after_command(value) is value


@pytest.mark.parametrize("value", [{"jedi_task_id": 1}, {"status": 3}, {}])
def test_a_dict_that_is_not_a_pushed_mark_is_refused(value):
    with pytest.raises(PandaInputError, match="must be a 'panda_command' XCom|must be a .* XCom"):
        marks.check_after_command(value)


@pytest.mark.parametrize("value", [5, ["a", ""], ["a", 3], [None], ""])
def test_anything_else_is_refused_saying_what_is_expected(value):
    with pytest.raises(PandaInputError, match="task_id of the Airflow task that sent the command"):
        marks.check_after_command(value)


# --- mark_before, publish -----------------------------------------------------------------------


class Hook:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[int] = []

    def get_task_info(self, task_id: int) -> Any:
        self.asked.append(task_id)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def test_a_mark_before_a_command_keeps_what_the_task_says_then(clock, log):
    hook = Hook({"status": "failed", "attemptNr": 2, "stateChangeTime": "2024-05-01 10:00:00", "errorDialog": "x"})
    taken = marks.mark_before(hook, TASK, "failed", "retry", log)
    assert hook.asked == [TASK]
    assert taken == StaleMark("failed", 2, "2024-05-01 10:00:00", "x", "retry", clock.wall)


@pytest.mark.parametrize("error", [PandaNotFoundError("Task not found"), PandaServerError(503, "down")])
def test_a_mark_is_taken_without_details_when_they_cannot_be_read(clock, log, error):
    taken = marks.mark_before(Hook(error), TASK, "finished", "file recovery", log)
    assert taken == StaleMark("finished", command="file recovery", sent_at=clock.wall)
    assert not taken.checkable
    assert any("rely on seeing the status change" in t for t in log.texts(logging.WARNING))


def test_a_mark_is_published_with_its_task_id_under_the_command_key(clock):
    ti = TI()
    taken = StaleMark.of("failed", {"attemptNr": 1}, "retry")
    marks.publish({"ti": ti}, TASK, taken)
    assert ti.pushed == [(xcom.COMMAND_MARK, {"jedi_task_id": TASK, **taken.to_dict()})]


def test_the_command_key_is_the_documented_one():
    assert xcom.COMMAND_MARK == "panda_command"


# --- upstream_mark ------------------------------------------------------------------------------


def test_a_mark_from_a_command_operator_directly_upstream_is_found():
    retry = CommandNode("retry")
    wait = Node("wait", [retry])
    ti = TI({"retry": mark()})
    assert marks.upstream_mark(wait, {"ti": ti}, TASK) == StaleMark.load(mark())
    assert ti.pulled == [("retry", xcom.COMMAND_MARK)]


def test_a_mark_from_a_command_operator_further_upstream_is_found():
    retry = CommandNode("retry")
    wait = Node("wait", [Node("b", [Node("a", [retry])])])
    assert marks.upstream_mark(wait, {"ti": TI({"retry": mark()})}, TASK) == StaleMark.load(mark())


def test_operators_that_send_no_commands_are_not_asked():
    wait = Node("wait", [Node("plain", [Node("older")])])
    ti = TI({"plain": mark()})
    assert marks.upstream_mark(wait, {"ti": ti}, TASK) is None
    assert ti.pulled == []


class CountingNode(CommandNode):
    """A command operator that counts how often the walk reads its upstream list."""

    walked = 0

    @property
    def upstream_list(self) -> list[Any]:
        type(self).walked += 1
        return []

    @upstream_list.setter
    def upstream_list(self, value: Any) -> None:
        pass


def test_a_diamond_upstream_is_walked_and_asked_once_per_operator():
    CountingNode.walked = 0
    retry = CountingNode("retry")
    wait = Node("wait", [Node("left", [retry]), Node("right", [retry])])
    ti = TI({"retry": mark()})
    marks.upstream_mark(wait, {"ti": ti}, TASK)
    assert ti.pulled == [("retry", xcom.COMMAND_MARK)]
    assert CountingNode.walked == 1


def test_a_mapped_command_operator_is_known_by_its_operator_class_and_gives_one_mark_per_index():
    mapped = MappedNode("retries", operator_class=CommandOperatorClass)
    wait = Node("wait", [mapped])
    pulled = [mark(sent_at=10.0), None, [mark("finished", sent_at=30.0)], mark(sent_at=20.0)]
    assert marks.upstream_mark(wait, {"ti": TI({"retries": pulled})}, TASK).status == "finished"


def test_the_newest_mark_wins():
    a, b = CommandNode("a"), CommandNode("b")
    ti = TI({"a": mark("failed", sent_at=50.0), "b": mark("finished", sent_at=60.0)})
    assert marks.upstream_mark(Node("wait", [a, b]), {"ti": ti}, TASK).status == "finished"


def test_a_mark_on_another_panda_task_is_ignored():
    ti = TI({"retry": mark(task_id=TASK + 1)})
    assert marks.upstream_mark(Node("wait", [CommandNode("retry")]), {"ti": ti}, TASK) is None


def test_a_task_id_pushed_as_text_matches():
    ti = TI({"retry": mark(task_id=str(TASK))})
    assert marks.upstream_mark(Node("wait", [CommandNode("retry")]), {"ti": ti}, TASK) is not None


def test_a_pulled_value_without_a_status_is_ignored():
    ti = TI({"retry": {"jedi_task_id": TASK}})
    assert marks.upstream_mark(Node("wait", [CommandNode("retry")]), {"ti": ti}, TASK) is None


def test_after_command_task_ids_are_asked_even_when_not_upstream():
    ti = TI({"elsewhere": mark()})
    assert marks.upstream_mark(Node("wait"), {"ti": ti}, TASK, after_command=("elsewhere",)) is not None
    assert ti.pulled == [("elsewhere", xcom.COMMAND_MARK)]


def test_an_after_command_mark_is_weighed_with_the_upstream_ones():
    ti = TI({"retry": mark("failed", sent_at=50.0)})
    given = mark("finished", sent_at=70.0)
    wait = Node("wait", [CommandNode("retry")])
    assert marks.upstream_mark(wait, {"ti": ti}, TASK, after_command=given).status == "finished"
    assert marks.upstream_mark(wait, {"ti": ti}, TASK, after_command=mark("done", sent_at=1.0)).status == "failed"


def test_a_wait_with_no_upstream_and_no_after_command_has_no_mark():
    ti = TI()
    assert marks.upstream_mark(Node("wait"), {"ti": ti}, TASK) is None
    assert ti.pulled == []


def test_an_after_command_mark_without_a_task_id_applies_to_the_waited_task():
    given = {"status": "finished", "sent_at": 5.0}
    assert marks.upstream_mark(Node("wait"), {"ti": TI()}, TASK, after_command=given).status == "finished"


def test_task_ids_given_as_a_generator_are_kept():
    assert marks.check_after_command(i for i in ["retry_it"]) == ("retry_it",)
