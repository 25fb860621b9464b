"""PandaHook: an Airflow connection of type ``panda`` turned into PanDA calls.

One method per call of the PanDA client reference, returning plain values and raising
:mod:`airflow_provider_panda.exceptions` errors. Transient faults (no answer, 5xx, 429) are
retried with backoff and jitter; a submission only when a repeat is answered as a duplicate.
"""

from __future__ import annotations

import asyncio
import functools
import os
import struct
from collections.abc import Iterable
from datetime import datetime, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_panda import api, calls, transport
from airflow_provider_panda.auth import claims as token_claims
from airflow_provider_panda.calls import Call
from airflow_provider_panda.compat import aget_connection
from airflow_provider_panda.config import PandaConnectionConfig, config_from_connection
from airflow_provider_panda.exceptions import (
    PandaAuthError,
    PandaDuplicateTaskError,
    PandaHTTPError,
    PandaInputError,
    PandaResponseError,
    PandaTransportError,
)

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
        return config_from_connection(self.get_connection(self.panda_conn_id))

    @cached_property
    def session(self) -> requests.Session:
        import requests

        return requests.Session()

    def _send(self, call: Call) -> dict[str, Any]:
        """One request, no retry: the envelope, or a typed error."""
        import requests

        cfg = self.config
        request = transport.prepare(call, cfg)
        body = request.pop("content", None)
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE override a session's verify
            response = self.session.request(data=body, timeout=cfg.timeout, verify=cfg.verify, **request)
        except requests.RequestException as exc:
            raise PandaTransportError(transport.redact(f"{type(exc).__name__}: {exc}", cfg)) from None
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
        """Submit a task (insertTaskParams) and return its jediTaskID.

        With ``uniqueTaskName: true`` a lost answer is retried: if the retry is told the task
        already exists, that task is ours and its id is returned. Any other duplicate raises
        :class:`PandaDuplicateTaskError` carrying the existing id.
        """
        call = calls.submit_task(task_params, parent_task_id)
        attempts = 0

        def once() -> int:
            nonlocal attempts
            attempts += 1
            try:
                answer = self._send(call)
                task_id = call.interpret(answer)
            except PandaDuplicateTaskError as exc:
                if attempts > 1 and exc.task_id:
                    self.log.warning("Submission retried after a lost answer; reattached to jediTaskID=%s",
                                     exc.task_id)
                    return exc.task_id
                raise
            # on success ``data`` is the task's id, not a code: only the message tells a re-execution
            if api.is_incremental_message(answer.get("message")):
                self.log.warning("PanDA re-executes the existing task %r (jediTaskID=%s): %s",
                                 task_params["taskName"], task_id, answer.get("message"))
            else:
                self.log.info("Submitted PanDA task %r: jediTaskID=%s", task_params["taskName"], task_id)
            return task_id

        if not call.idempotent:
            return once()
        import tenacity

        retrying = tenacity.Retrying(**transport.retrying_kwargs(self.config, self.log, "task/submit"))
        return retrying(once)

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

    def get_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Descriptions of active jobs (getJobStatus); ``None`` for an unknown or archived id."""
        return self.run(calls.get_job_status(job_ids))

    def get_full_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Descriptions of jobs, archived ones included (getFullJobStatus)."""
        return self.run(calls.get_full_job_status(job_ids))

    def kill_jobs(self, job_ids: Iterable[int]) -> list[bool]:
        """Kill jobs (killJobs): one boolean per id."""
        return self.run(calls.kill_jobs(job_ids))

    def get_user_job_metadata(self, task_id: int) -> dict[str, Any]:
        """Metadata of the task's finished jobs, keyed by PandaID (getUserJobMetadata)."""
        return self.run(calls.get_user_job_metadata(task_id))

    def send_command_to_job(self, job_id: int, command: str) -> str:
        """Send a command (at most 250 characters) to a job's pilot; production role."""
        return self.run(calls.send_command_to_job(job_id, command))

    def send_file_recovery_request(self, task_id: int, dry_run: bool = False) -> str:
        """Ask PanDA to recover the task's lost files; returns the recovery log URL."""
        return self.run(calls.send_file_recovery_request(task_id, dry_run))

    def get_tasks_modified_since(self, since: datetime | str) -> dict[int, dict[str, Any]]:
        """The caller's tasks modified since a time (UTC), keyed by jediTaskID, in one call."""
        return self.run(calls.get_tasks_modified_since(since))

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

    def get_task_jobs(self, task_id: int) -> list[dict[str, Any] | None]:
        """Descriptions of the task's newest jobs (at most one call's worth), for reports and counts."""
        job_ids = self.get_job_ids(task_id)[-api.MAX_JOB_IDS_PER_CALL:]
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


@functools.lru_cache(maxsize=16)
def _ssl_context(ca_path: str | None, proxy: str | None) -> Any:
    """Building an SSL context reads the CA store (tens of ms): do it once per process and settings,
    not once per trigger on the triggerer's event loop."""
    import ssl

    if ca_path is None:
        ctx = ssl.create_default_context()
    elif os.path.isdir(ca_path):
        ctx = ssl.create_default_context(capath=ca_path)
    else:
        ctx = ssl.create_default_context(cafile=ca_path)
    if proxy:
        ctx.load_cert_chain(proxy, proxy)
    return ctx


class AsyncPandaClient:
    """The async twin of :class:`PandaHook` for triggers: same calls, same retries, httpx."""

    def __init__(self, config: PandaConnectionConfig, log: Any) -> None:
        self.config = config
        self.log = log
        self._client: httpx.AsyncClient | None = None

    @classmethod
    async def for_connection(cls, conn_id: str, log: Any) -> AsyncPandaClient:
        conn = await aget_connection(conn_id)
        return cls(config_from_connection(conn), log)

    def _ssl(self) -> Any:
        """TLS settings for httpx: none for plain http, else one cached SSL context per settings."""
        cfg = self.config
        if not cfg.base_url.startswith("https://") and not (cfg.cache_url or "").startswith("https://"):
            return False
        if cfg.verify is False:
            return False
        return _ssl_context(cfg.verify if isinstance(cfg.verify, str) else None,
                            cfg.check_proxy() if cfg.auth == "x509" else None)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(verify=self._ssl(), timeout=self.config.timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _send(self, call: Call) -> dict[str, Any]:
        import httpx

        cfg = self.config
        token = None
        if call.endpoint.secure and cfg.auth == "oidc" and cfg.may_block:  # file read or refresh: not on the loop
            token = await asyncio.to_thread(cfg.read_token)
        request = transport.prepare(call, cfg, client="httpx", token=token)
        request.pop("cert", None)  # carried by the SSL context
        try:
            response = await self.client.request(**request)
        except httpx.HTTPError as exc:
            raise PandaTransportError(transport.redact(f"{type(exc).__name__}: {exc}", self.config)) from None
        return transport.parse(response.status_code, response.content, self.config)

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

    async def get_tasks_modified_since(self, since: datetime | str) -> dict[int, dict[str, Any]]:
        return await self.run(calls.get_tasks_modified_since(since))

    async def get_job_ids(self, task_id: int) -> list[int]:
        return await self.run(calls.get_job_ids(task_id))

    async def get_full_job_status(self, job_ids: Iterable[int]) -> list[dict[str, Any] | None]:
        return await self.run(calls.get_full_job_status(job_ids))

    async def get_task_jobs(self, task_id: int) -> list[dict[str, Any] | None]:
        job_ids = (await self.get_job_ids(task_id))[-api.MAX_JOB_IDS_PER_CALL:]
        return await self.get_full_job_status(job_ids) if job_ids else []
