"""PandaHook: an Airflow connection of type ``panda`` turned into PanDA calls.

One method per call of the PanDA client reference, returning plain values and raising
:mod:`airflow_provider_panda.exceptions` errors. Transient faults (no answer, 5xx, 429) are
retried with backoff and jitter; a submission only when a repeat is answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_panda import api, calls, transport
from airflow_provider_panda.auth import claims as token_claims
from airflow_provider_panda.calls import Call
from airflow_provider_panda.compat import aget_connection
from airflow_provider_panda.config import PandaConnectionConfig, config_from_connection, explain_missing_connection
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaDuplicateTaskError,
    PandaError,
    PandaHTTPError,
    PandaInputError,
    PandaPermissionError,
    PandaResponseError,
    PandaSubmissionUnknownError,
    PandaTransportError,
)

#: How often a kill of one's own just-submitted task is tried again while the server refuses it.
OWN_KILL_RETRY_INTERVAL = 1.0


def own_kill_retrying(budget: float) -> dict[str, Any]:
    """tenacity settings for killing a task the caller submitted: the server answers its owner's kill
    "not the task owner" while only DEFT has the task or JEDI has not refined it (``tobeset``), so
    that answer is tried again, within ``budget`` seconds, not taken as final."""
    import tenacity

    return {"retry": tenacity.retry_if_exception_type(PandaPermissionError), "reraise": True,
            "wait": tenacity.wait_fixed(OWN_KILL_RETRY_INTERVAL), "stop": tenacity.stop_after_delay(budget)}


#: Keys the server sets or changes in the parameters it stores (insertTaskParamsPanda).
SERVER_SET_KEYS = frozenset({"userName", "taskType", "taskPriority", "workingGroup"})


@dataclass(frozen=True)
class Submission:
    """What a submission did: the jediTaskID, and whether PanDA re-executes an existing task of
    that name (incremental execution, code 3) instead of making a new one."""

    task_id: int
    reexecuted: bool
    message: str
    #: The id came from PanDA's "duplicate" answer to a resend after a lost answer: the task the first
    #: send made, or another submitter's that took the name in between. Whose it is, the caller checks.
    from_resend: bool = False


def same_task_params(stored: Any, sent: dict[str, Any]) -> bool:
    """Whether parameters the server stored are the ones sent (ignoring what the server sets)."""
    return isinstance(stored, dict) and all(stored.get(k) == v for k, v in sent.items() if k not in SERVER_SET_KEYS)

#: How far a server's clock may be behind ours when telling new tasks from old ones.
CLOCK_SKEW = timedelta(minutes=5)
#: Seconds a lost submission's task is looked for by name (JEDI lists a new task after DEFT has it).
LOST_SUBMISSION_WAIT = 180.0
#: How many of a task's newest jobs a failure report reads (a 100,000-job task is not listed whole).
JOB_SAMPLE = 200

if TYPE_CHECKING:
    import httpx
    import requests


class PandaHook(BaseHook):
    """Talk to a PanDA server through an Airflow connection.

    :param panda_conn_id: the connection; ``host`` is the server URL, ``password`` an OIDC id
        token, extras ``vo``, ``auth``, ``token_file``, ``x509_proxy``, ``ca_path``/``verify``,
        ``cache_url``, ``monitor_url``, ``timeout``, ``max_retries``, ``retry_wait``.
    """

    conn_name_attr = "panda_conn_id"
    default_conn_name = "panda_default"
    conn_type = "panda"
    hook_name = "PanDA"

    def __init__(self, panda_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.panda_conn_id = panda_conn_id
        #: How long a submission whose answer was lost is looked for before "unknown outcome".
        self.lost_submission_wait = LOST_SUBMISSION_WAIT

    def __repr__(self) -> str:
        return f"PandaHook(panda_conn_id={self.panda_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Labels and hidden fields of the connection form for Airflow 3.1, which reads them from the
        hook (3.2+ reads ``ui-field-behaviour`` from the provider info and skips this method)."""
        from airflow_provider_panda import CONNECTION_UI

        return {key.replace("-", "_"): value for key, value in CONNECTION_UI.items()}

    # --- plumbing -----------------------------------------------------------------------------

    @cached_property
    def config(self) -> PandaConnectionConfig:
        try:
            conn = self.get_connection(self.panda_conn_id)
        except Exception as exc:  # Airflow's "isn't defined", with what to do about it
            raise explain_missing_connection(exc, self.panda_conn_id) from None
        return config_from_connection(conn)

    @cached_property
    def session(self) -> requests.Session:
        from airflow_provider_panda.tls import requests_session

        return requests_session(self.config)

    def _send(self, call: Call) -> dict[str, Any]:
        """One request, no retry: the envelope, or a typed error."""
        import requests

        cfg = self.config
        request = transport.prepare(call, cfg)
        body = request.pop("content", None)
        try:
            # TLS (trust store, x509 proxy) comes from the session's SSL context, as for httpx (tls.py)
            response = self.session.request(data=body, timeout=cfg.timeout, **request)
        except requests.RequestException as exc:
            raise transport.no_answer(exc, cfg) from None
        return transport.parse(response.status_code, response.content, cfg)

    def run(self, call: Call) -> Any:
        """Send a call (retrying transient faults when it is safe) and interpret its answer."""
        import tenacity

        if not call.idempotent:
            return call.interpret(self._send(call))
        retrying = tenacity.Retrying(**transport.retrying_kwargs(self.config, self.log, call.endpoint.name))
        return retrying(lambda: call.interpret(self._send(call)))

    # --- the calls of the PanDA client reference ----------------------------------------------

    def hello(self) -> str:
        """Health check (``system/is_alive``); needs no credentials. Returns the server's message."""
        return self.run(calls.hello())

    def submit_task(self, task_params: dict[str, Any], parent_task_id: int | None = None) -> int:
        """Submit a task (insertTaskParams) and return its jediTaskID (see :meth:`submit`)."""
        return self.submit(task_params, parent_task_id).task_id

    def submit(self, task_params: dict[str, Any], parent_task_id: int | None = None) -> Submission:
        """Submit a task; the answer says whether PanDA made a new task or re-executes an existing
        finished one of the same name (incremental execution).

        A submission the server's duplicate check covers (``uniqueTaskName: true`` and task type
        ``anal``, see :func:`api.submission_is_repeatable`) is resent after a lost answer, and a
        duplicate answer to the resend is the task the first send created. Any other submission is
        sent once: a lost answer is resolved by looking the task up by name (tasks that were not
        there before, with the parameters sent), else :class:`PandaSubmissionUnknownError`.
        A duplicate answer to a first send raises :class:`PandaDuplicateTaskError` with the id; one to
        a resend returns the id with ``from_resend`` set (it may be another submitter's task).
        """
        call = calls.submit_task(task_params, parent_task_id)
        if not call.idempotent:
            return self._submit_once(call, task_params)
        attempts = 0
        first_sent = datetime.now(timezone.utc).replace(tzinfo=None)

        def once() -> Submission:
            nonlocal attempts
            attempts += 1
            if attempts > 1:  # the first send's task may exist, or even have finished: a resend would re-run it
                found = self._created_by_this_submission(task_params, first_sent)
                if found is not None:
                    return found
            try:
                answer = self._send(call)
                return self._read_submission(call, answer, task_params)
            except PandaDuplicateTaskError as exc:
                if attempts > 1 and exc.task_id:
                    self.log.warning("Submission resent after a lost answer; the first send created jediTaskID=%s",
                                     exc.task_id)
                    return Submission(exc.task_id, False, exc.server_message, from_resend=True)
                raise

        import tenacity

        retrying = tenacity.Retrying(**transport.retrying_kwargs(self.config, self.log, "task/submit"))
        return retrying(once)

    def _read_submission(self, call: Call, answer: dict[str, Any], task_params: dict[str, Any]) -> Submission:
        task_id = call.interpret(answer)
        message = str(answer.get("message") or "")
        # on success ``data`` is the task's id, not a code: only the message tells a re-execution
        reexecuted = api.is_incremental_message(message)
        if reexecuted:
            self.log.warning("PanDA re-executes the existing task %r (jediTaskID=%s): %s",
                             task_params["taskName"], task_id, message)
        else:
            self.log.info("Submitted PanDA task %r: jediTaskID=%s", task_params["taskName"], task_id)
        return Submission(task_id, reexecuted, message)

    def _created_by_this_submission(self, task_params: dict[str, Any], sent: datetime) -> Submission | None:
        """After a lost answer: the task named so, with these parameters, created since the first
        send (a few minutes' margin for clock skew), if PanDA lists it already."""
        try:
            tasks = self.find_tasks_by_name(task_params["taskName"])
        except PandaError as exc:
            self.log.warning("Could not look for the submitted task before resending (%s)", exc)
            return None
        margin = sent - CLOCK_SKEW
        mine = [t for t in tasks if same_task_params(t.get("raw_task_params"), task_params)
                and isinstance(t.get("creationDate"), datetime) and t["creationDate"].replace(tzinfo=None) >= margin]
        if not mine:
            return None
        task_id = max(int(t["jediTaskID"]) for t in mine)
        self.log.warning("The submission's answer was lost; PanDA already has the task: jediTaskID=%s", task_id)
        return Submission(task_id, False, "found by name after a lost answer")

    def _submit_once(self, call: Call, task_params: dict[str, Any]) -> Submission:
        """A submission a repeat could duplicate: never resent; a lost answer is looked up."""
        name = task_params["taskName"]
        try:
            before = {t.get("jediTaskID") for t in self.find_tasks_by_name(name)}
        except PandaError as exc:
            self.log.warning("Could not list tasks named %r before submitting (%s): a lost answer will "
                             "not be resolvable", name, exc)
            before = None
        try:
            answer = self._send(call)
        except PandaError as exc:
            if not transport.is_transient(exc):
                raise
            return self._resolve_lost_submission(task_params, before, exc)
        return self._read_submission(call, answer, task_params)

    def _resolve_lost_submission(self, task_params: dict[str, Any], before: set[Any] | None,
                                 cause: PandaError) -> Submission:
        import time

        name = task_params["taskName"]
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.lost_submission_wait
        pause = self.config.retry_wait
        while before is not None and not found:
            try:
                found = [t for t in self.find_tasks_by_name(name)
                         if t.get("jediTaskID") not in before and same_task_params(t.get("raw_task_params"),
                                                                                   task_params)]
            except PandaError as exc:
                self.log.warning("Could not look up the task named %r after a lost answer: %s", name, exc)
            if found or time.monotonic() + pause > deadline:
                break
            self.log.info("The submission's answer was lost; looking for task %r again in %.0f s", name, pause)
            time.sleep(pause)  # a new task is only in DEFT at first: JEDI lists it seconds to minutes later
            pause = min(pause * 2, 30.0)
        if found:
            task_id = max(int(t["jediTaskID"]) for t in found)
            self.log.warning("The submission's answer was lost (%s); PanDA has the task: jediTaskID=%s", cause, task_id)
            return Submission(task_id, False, "found by name after a lost answer")
        raise PandaSubmissionUnknownError(
            f"The submission of {name!r} got no answer ({cause}) and no such new task is visible yet. It was "
            f"not resent: PanDA checks names for duplicates only for uniqueTaskName tasks of type "
            f"'{api.DUPLICATE_CHECKED_TASK_TYPE}' (this one is {task_params.get('taskType')!r}), so a resend "
            f"could make a second task. Look for a task named {name!r} (it can take minutes to appear) "
            "before submitting it again.", name)

    def get_task_status(self, task_id: int) -> str:
        """The task's status (getTaskStatus); :class:`PandaNotFoundError` for an unknown task."""
        return self.run(calls.get_task_status(task_id))

    def get_task_params(self, task_id: int) -> dict[str, Any]:
        """The parameters the task was submitted with (getTaskParamsMap)."""
        return self.run(calls.get_task_params(task_id))

    def get_job_ids(self, task_id: int) -> list[int]:
        """PandaIDs of the task's jobs (getPandaIDsWithTaskID)."""
        return self.run(calls.get_job_ids(task_id))

    def kill_task(self, task_id: int) -> str:
        """Kill a task (killTask); raises :class:`PandaCommandRejected` with the server's code."""
        return self.run(calls.kill_task(task_id))

    def kill_own_task(self, task_id: int, budget: float) -> str:
        """Kill a task this caller submitted, through the server's refusals while it is just
        submitted (see :func:`own_kill_retrying`)."""
        import tenacity

        return tenacity.Retrying(**own_kill_retrying(budget))(self.kill_task, task_id)

    def finish_task(self, task_id: int, soft: bool = False) -> str:
        """Finish a task (finishTask); ``soft`` lets running jobs complete."""
        return self.run(calls.finish_task(task_id, soft))

    def retry_task(self, task_id: int, new_params: dict[str, Any] | None = None) -> str:
        """Retry a task's failed work (retryTask), optionally with parameters merged in."""
        return self.run(calls.retry_task(task_id, new_params))

    def resume_task(self, task_id: int) -> str:
        """Resume a paused or throttled task (resumeTask); production role."""
        return self.run(calls.resume_task(task_id))

    def reactivate_task(self, task_id: int) -> str:
        """Reactivate a finished or done task (reactivateTask); production role."""
        return self.run(calls.reactivate_task(task_id))

    def _split(self, make: Any, job_ids: Iterable[int]) -> list[Any]:
        """A job-id call over any number of ids: one call per server-sized chunk, answers in order."""
        return [item for chunk in calls.job_id_chunks(job_ids) for item in self.run(make(chunk))]

    def get_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Descriptions of active jobs (getJobStatus); ``None`` for an unknown or archived id.
        More ids than one call takes are sent in several calls."""
        return self._split(calls.get_job_status, job_ids)

    def get_full_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Descriptions of jobs, archived ones included (getFullJobStatus), in as many calls as needed."""
        return self._split(calls.get_full_job_status, job_ids)

    def kill_jobs(self, job_ids: Iterable[int]) -> list[bool]:
        """Kill jobs (killJobs): one boolean per id, in as many calls as needed."""
        return self._split(calls.kill_jobs, job_ids)

    def get_user_job_metadata(self, task_id: int) -> dict[str, Any]:
        """Metadata of the task's finished jobs, keyed by PandaID (getUserJobMetadata)."""
        return self.run(calls.get_user_job_metadata(task_id))

    def send_command_to_job(self, job_id: int, command: str) -> str:
        """Send a command (at most 250 characters) to a job's pilot; production role."""
        return self.run(calls.send_command_to_job(job_id, command))

    def send_file_recovery_request(self, task_id: int, dry_run: bool = False) -> str:
        """Ask PanDA to recover the task's lost files; returns the recovery log URL."""
        return self.run(calls.send_file_recovery_request(task_id, dry_run))

    def get_tasks_modified_since(self, since: datetime | str,
                                 min_task_id: int | None = None) -> dict[int, dict[str, Any]]:
        """The caller's tasks modified since a time (UTC), keyed by jediTaskID, in one call
        (``min_task_id``: only tasks with a larger id). JEDI back-dates ``modificationTime`` on
        purpose, so this is no complete change feed: see the README's "Waits" section."""
        return self.run(calls.get_tasks_modified_since(since, min_task_id))

    def get_task_info(self, task_id: int) -> dict[str, Any]:
        """Task-level facts in one read (``task/get_detailed_info``): ``status``, ``attemptNr``,
        ``stateChangeTime``, ``errorDialog``, ``nFiles``, ``nFilesFinished``, ``nFilesFailed``, ..."""
        return self.run(calls.get_task_info(task_id))

    def get_datasets_and_files(self, task_id: int,
                               dataset_types: Iterable[str] = api.DEFAULT_DATASET_TYPES) -> list[dict[str, Any]]:
        """A task's datasets of some types (e.g. ``["output", "log"]``) with their files
        (``task/get_datasets_and_files``): ``[{"dataset": {"name", "id"}, "files": [...]}]``, ``[]`` if none."""
        return self.run(calls.get_datasets_and_files(task_id, dataset_types))

    def get_task_details(self, task_id: int, include_parameters: bool = False,
                         include_status: bool = False) -> dict[str, Any]:
        """A task's digest (``task/get_details``): ``inDS``, ``outDS`` (comma-joined containers),
        ``statistics``, ``PandaID``; ``status`` and ``cliParams`` when asked."""
        return self.run(calls.get_task_details(task_id, include_parameters, include_status))

    def get_job_descriptions(self, task_id: int, unsuccessful_only: bool = False) -> list[dict[str, Any]]:
        """The task's job descriptions in one call (``task/get_job_descriptions``; the server caps them)."""
        return self.run(calls.get_job_descriptions(task_id, unsuccessful_only))

    def find_tasks_by_name(self, task_name: str) -> list[dict[str, Any]]:
        """The caller's tasks called ``task_name`` (one request; PanDA searches the last 90 days)."""
        return self.run(calls.find_tasks_by_name(task_name))

    def put_file(self, path: str, use_cache_server: bool = False, reuse_sandbox: bool = False) -> str:
        """Upload a file to the cache (putFile); returns the file name the server holds it under.

        With ``reuse_sandbox`` a gzip file the server already holds (same size and CRC) is not
        sent again and the name of the server's copy is returned.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise PandaInputError(f"path must be a file path, got {type(path).__name__}")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise PandaInputError(f"{path!r} is not a file" + ("" if os.path.exists(path) else " (it does not exist)"))
        name = os.path.basename(path)
        size = os.path.getsize(path)
        limit = api.upload_size_limit(name)
        if size > limit:
            raise PandaInputError(f"{name} is {size} bytes; the cache takes at most {limit} bytes for this name")
        try:
            with open(path, "rb") as handle:
                content = handle.read()
        except OSError as exc:
            raise PandaInputError(f"cannot read {path!r}: {exc.strerror}") from None
        if reuse_sandbox and len(content) >= 8:
            checksum, _ = struct.unpack("II", content[-8:])
            env = self.run(calls.validate_cache_file(size, checksum))
            message = str(env.get("message") or "")
            if message.startswith("FOUND:"):
                return message.split(":", 1)[1].rsplit(":", 1)[1]
        self.run(calls.upload_cache_file(name, content, use_cache_server))
        return name

    def get_user_name_from_token(self) -> tuple[str | None, list[str] | None, str | None]:
        """Name (each word capitalised), groups and preferred_username from the id token; no request."""
        token = self.config.read_token()
        if not token:
            raise PandaInputError("the connection has no OIDC id token to read a user name from")
        claims = token_claims(token)
        if not claims:
            raise PandaInputError("the id token is not a JWT with a JSON payload")
        name = claims.get("name")
        if name is not None:
            name = " ".join(t[:1].upper() + t[1:].lower() for t in str(name).split())
        return name, claims.get("groups"), claims.get("preferred_username")

    def get_task_jobs(self, task_id: int, limit: int = JOB_SAMPLE) -> list[dict[str, Any] | None]:
        """Descriptions of the task's ``limit`` newest jobs: a bounded sample for failure reports."""
        job_ids = self.get_job_ids(task_id)[-limit:]
        return self.get_full_job_status(job_ids) if job_ids else []

    # --- Airflow ------------------------------------------------------------------------------

    def monitor_url(self, task_id: int) -> str:
        return api.monitor_task_url(self.config.monitor_url, task_id)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: reach the server, then make one authenticated call, once each
        (no retries, so the answer is quick), and say what to change when something fails."""
        try:
            cfg = self.config
        except PandaInputError as exc:
            return False, f"The connection cannot be used as it is: {exc}"
        url = cfg.base_url
        try:
            hello = calls.hello()
            hello.interpret(self._send(hello))
        except PandaTransportError as exc:
            if "SSL" in str(exc) or "certificate" in str(exc).lower():
                return False, (f"TLS with {url} failed ({exc}). Set 'CA directory or file' to the CA that "
                               "signed the server's certificate (grid CAs: /etc/grid-security/certificates).")
            return False, (f"Cannot reach {url} ({exc}). Check the URL (scheme, host and port, e.g. "
                           "https://pandaserver.cern.ch:25443) and that this machine can reach it.")
        except (PandaHTTPError, PandaResponseError) as exc:
            return False, f"{url} does not answer like a PanDA server ({exc}). Check the URL and port."
        if cfg.auth == "none":
            return True, (f"Reached {url}, but the connection has no credentials: only hello works. Set the "
                          "id token (password), a token file or an X509 proxy to submit tasks.")
        try:
            if cfg.auth == "oidc":
                expired = _expired_at(cfg.read_token())
                if expired:
                    return False, (f"The id token expired at {expired}. Paste a fresh one, or set "
                                   "'Refresh token' or 'Token file' so the hook can renew it.")
            call = calls.get_tasks_modified_since(datetime.now(timezone.utc))
            call.interpret(self._send(call))
        except PandaAuthError as exc:
            if cfg.auth == "x509":
                return False, (f"{url} refused the X509 proxy ({exc}). Check that it is valid and has the "
                               "VO extension (voms-proxy-info --all).")
            return False, (f"{url} refused the token for VO {cfg.vo!r} ({exc}). Check the VO (atlas, or "
                           "atlas:production for the production role, which the token must carry) and that "
                           "the token was issued for it and has not expired.")
        except PandaTransportError as exc:
            return False, f"{url} was reachable but the authenticated call failed ({exc})."
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        who = f"VO {cfg.vo!r}" if cfg.auth == "oidc" else "the X509 proxy"
        return True, f"Connected to {url} with {who}: the credentials were accepted."


def _expired_at(token: str | None) -> str | None:
    """When an id token expired (UTC, ISO), or None if it has not or says nothing about it."""
    exp = token_claims(token).get("exp") if token else None
    if isinstance(exp, (int, float)) and exp < datetime.now(timezone.utc).timestamp():
        return datetime.fromtimestamp(exp, timezone.utc).isoformat(timespec="seconds")
    return None


#: Answers larger than this are parsed in a thread, not on the triggerer's event loop.
BIG_BODY = 256 * 1024
#: A long-lived client re-reads its Airflow connection this often (a token or proxy path changed there).
RELOAD_EVERY = 300.0


class AsyncPandaClient:
    """The async twin of :class:`PandaHook` for triggers: same calls, same retries, httpx."""

    def __init__(self, config: PandaConnectionConfig, log: Any, conn_id: str | None = None) -> None:
        self.config = config
        self.log = log
        self.conn_id = conn_id
        self._client: httpx.AsyncClient | None = None
        self._client_ssl: Any = None
        self._loaded = time.monotonic()

    @classmethod
    async def for_connection(cls, conn_id: str, log: Any) -> AsyncPandaClient:
        try:
            conn = await aget_connection(conn_id)
        except Exception as exc:  # Airflow's "isn't defined", with what to do about it
            raise explain_missing_connection(exc, conn_id) from None
        return cls(config_from_connection(conn), log, conn_id)

    async def reload(self, force: bool = False) -> bool:
        """Re-read the Airflow connection (every RELOAD_EVERY s, or now if forced); True if it changed."""
        if self.conn_id is None or (not force and time.monotonic() - self._loaded < RELOAD_EVERY):
            return False
        self._loaded = time.monotonic()
        try:
            config = config_from_connection(await aget_connection(self.conn_id))
        except Exception as exc:  # keep the settings in use; the next reload tries again
            self.log.warning("Re-reading connection %s failed (%s); keeping its settings", self.conn_id, exc)
            return False
        if config == self.config:
            return False
        self.log.info("Connection %s changed: new settings used from the next request", self.conn_id)
        self.config = config
        await self.aclose()  # timeouts and TLS settings too
        return True

    async def _http(self) -> httpx.AsyncClient:
        """The httpx client, rebuilt when the SSL context changes (a replaced proxy file, new settings)."""
        import httpx

        from airflow_provider_panda.tls import ssl_context

        ssl = ssl_context(self.config, "httpx")
        if self._client is None or ssl is not self._client_ssl:
            if self._client is not None:
                await self._client.aclose()
            self._client = httpx.AsyncClient(verify=ssl if ssl is not None else False, timeout=self.config.timeout)
            self._client_ssl = ssl
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send(self, call: Call) -> dict[str, Any]:
        import httpx

        await self.reload()
        cfg = self.config
        token = None
        if call.endpoint.secure and cfg.auth == "oidc" and cfg.may_block:  # file read or refresh: not on the loop
            token = await asyncio.to_thread(cfg.read_token)
        request = transport.prepare(call, cfg, client="httpx", token=token)
        client = await self._http()
        try:
            response = await client.request(**request)
        except httpx.HTTPError as exc:
            raise transport.no_answer(exc, cfg) from None
        if len(response.content) > BIG_BODY:  # tens of MB of job descriptions: not on the event loop
            return await asyncio.to_thread(transport.parse, response.status_code, response.content, cfg)
        return transport.parse(response.status_code, response.content, cfg)

    async def run(self, call: Call) -> Any:
        import tenacity

        if not call.idempotent:
            return call.interpret(await self._send(call))
        async for attempt in tenacity.AsyncRetrying(
            **transport.retrying_kwargs(self.config, self.log, call.endpoint.name)
        ):
            with attempt:
                return call.interpret(await self._send(call))
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_task_status(self, task_id: int) -> str:
        return await self.run(calls.get_task_status(task_id))

    async def kill_task(self, task_id: int) -> str:
        return await self.run(calls.kill_task(task_id))

    async def kill_own_task(self, task_id: int, budget: float) -> str:
        import tenacity

        async for attempt in tenacity.AsyncRetrying(**own_kill_retrying(budget)):
            with attempt:
                return await self.kill_task(task_id)
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_tasks_modified_since(self, since: datetime | str,
                                       min_task_id: int | None = None) -> dict[int, dict[str, Any]]:
        return await self.run(calls.get_tasks_modified_since(since, min_task_id))

    async def get_task_info(self, task_id: int) -> dict[str, Any]:
        return await self.run(calls.get_task_info(task_id))

    async def get_datasets_and_files(self, task_id: int,
                                     dataset_types: Iterable[str] = api.DEFAULT_DATASET_TYPES) -> list[dict[str, Any]]:
        return await self.run(calls.get_datasets_and_files(task_id, dataset_types))

    async def get_job_ids(self, task_id: int) -> list[int]:
        return await self.run(calls.get_job_ids(task_id))

    async def get_full_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        return [job for chunk in calls.job_id_chunks(job_ids)
                for job in await self.run(calls.get_full_job_status(chunk))]

    async def get_task_jobs(self, task_id: int, limit: int = JOB_SAMPLE) -> list[dict[str, Any] | None]:
        job_ids = (await self.get_job_ids(task_id))[-limit:]
        return await self.get_full_job_status(job_ids) if job_ids else []
