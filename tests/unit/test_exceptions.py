"""The typed errors: their usual constructors, and the round trip through fields (the trigger boundary)."""

from __future__ import annotations

import copy
import json
import pickle

import pytest

from airflow_provider_panda import exceptions
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaCallFailed,
    PandaCertificateError,
    PandaCommandRejected,
    PandaConnectionConfigError,
    PandaDuplicateTaskError,
    PandaError,
    PandaHTTPError,
    PandaInputError,
    PandaNotEnvelopeError,
    PandaNotFoundError,
    PandaPermissionError,
    PandaResponseError,
    PandaServerError,
    PandaSubmissionUnknownError,
    PandaTaskFailedError,
    PandaTaskNameTaken,
    PandaTimeoutError,
    PandaTransportError,
    error_from_fields,
)

#: One error of every class, built as the provider builds them.
ERRORS = [
    PandaError("something went wrong"),
    PandaInputError("task_id must be a positive integer"),
    PandaConnectionConfigError("the connection has no host"),
    PandaTransportError("connection refused"),
    PandaCertificateError("x509_proxy '/tmp/x509up_u1' expired"),
    PandaHTTPError(404, "no such endpoint"),
    PandaAuthError(403, "token expired"),
    PandaServerError(503, "unavailable"),
    PandaResponseError("the envelope has no 'success'"),
    PandaNotEnvelopeError("an HTML page instead of the envelope"),
    PandaCallFailed("database error", {"detail": "x"}),
    PandaNotFoundError("Task not found", 4),
    PandaPermissionError("not the task owner"),
    PandaCommandRejected(4, "bad status", action="kill"),
    PandaCommandRejected(3, "no such task", 42, "retry"),
    PandaDuplicateTaskError(0, "jediTaskID=77 already exists", 77),
    PandaTaskFailedError("PanDA task 5 failed", 5, "failed"),
    PandaTimeoutError("still running after 60 s"),
    PandaTaskNameTaken("the name is held by task 8", 8, None),
    PandaSubmissionUnknownError("no answer, task not found", "user.alice.test"),
]


def every_class() -> set[type[PandaError]]:
    return {c for c in vars(exceptions).values() if isinstance(c, type) and issubclass(c, PandaError)}


def test_the_sample_covers_every_class() -> None:
    assert {type(e) for e in ERRORS} == every_class()


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_crosses_as_json_fields_and_comes_back_the_same(error: PandaError) -> None:
    fields = json.loads(json.dumps(error.to_fields()))  # what a trigger event carries
    rebuilt = error_from_fields(**fields)
    assert type(rebuilt) is type(error)
    assert str(rebuilt) == str(error)
    assert rebuilt.attributes() == error.attributes()
    for name in type(error).fields:
        assert getattr(rebuilt, name) == getattr(error, name)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_every_class_is_constructible_from_message_and_attributes(error: PandaError) -> None:
    rebuilt = type(error)(message=str(error), **error.attributes())
    assert (type(rebuilt), str(rebuilt), rebuilt.attributes()) == (type(error), str(error), error.attributes())


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_pickle_and_copy_keep_type_message_and_attributes(error: PandaError) -> None:
    for other in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert (type(other), str(other), other.attributes()) == (type(error), str(error), error.attributes())


def test_the_usual_constructors_set_their_attributes() -> None:
    http = PandaAuthError(403, "token expired")
    assert (http.status_code, http.text, str(http)) == (403, "token expired", "HTTP 403: token expired")
    failed = PandaNotFoundError("Task not found", {"raw": 1})
    assert (failed.server_message, failed.data, str(failed)) == ("Task not found", {"raw": 1}, "Task not found")
    rejected = PandaCommandRejected(4, "bad status", 12, "kill")
    assert (rejected.code, rejected.server_message, rejected.task_id, rejected.action, rejected.data) == (
        4, "bad status", 12, "kill", 4)
    assert str(rejected) == "PanDA kill rejected with code 4: bad status"
    duplicate = PandaDuplicateTaskError(0, "jediTaskID=77 already exists", 77)
    assert (duplicate.task_id, duplicate.action) == (77, "submit")
    assert isinstance(PandaInputError("bad"), ValueError)


def test_fields_are_json_primitives() -> None:
    for error in ERRORS:
        fields = error.to_fields()
        assert set(fields) == {"error_type", "message", "attributes"}
        assert all(v is None or isinstance(v, (str, int, float, bool)) for v in fields["attributes"].values())


def test_the_message_is_kept_as_sent_not_recomposed() -> None:
    """The text crosses as it was (already redacted), whatever the attributes would compose."""
    rebuilt = error_from_fields("PandaAuthError", "HTTP 403: *** refused", {"status_code": 403, "text": "x"})
    assert str(rebuilt) == "HTTP 403: *** refused"
    assert (rebuilt.status_code, rebuilt.text) == (403, "x")


@pytest.mark.parametrize("error_type", [None, "", "ValueError", "NoSuchError", "Any", "error_from_fields"])
def test_an_unknown_type_comes_back_as_a_panda_error(error_type: str | None) -> None:
    rebuilt = error_from_fields(error_type, "boom", {"code": 1})
    assert type(rebuilt) is PandaError
    assert str(rebuilt) == "boom"


def test_missing_attributes_are_none_and_unknown_ones_ignored() -> None:
    rebuilt = error_from_fields("PandaCommandRejected", "PanDA kill rejected with code 4: x", {"code": 4, "new": 1})
    assert type(rebuilt) is PandaCommandRejected
    assert (rebuilt.code, rebuilt.task_id, rebuilt.action) == (4, None, None)
    assert rebuilt.server_message == str(rebuilt)  # as any PandaCallFailed without one
    assert not hasattr(rebuilt, "new")
    assert error_from_fields("PandaTaskFailedError", "failed", None).attributes() == {"task_id": None, "status": None}


def test_a_class_refuses_an_attribute_it_does_not_have() -> None:
    with pytest.raises(TypeError, match="code"):
        PandaTransportError("refused", code=1)
