"""A local PanDA server for developing and testing DAGs offline: ``python -m airflow_provider_panda.testing.server``.

It serves ``/api/v1/...`` the way panda-server 1.0.4 does (envelope, codes, 403 plain text,
``success: false`` shapes, datetimes as ``{"__datetime__": ...}``, argument casting), with OIDC
bearer tokens it mints itself, over a task simulation (:mod:`.sim`) on a controllable clock.
Test control lives under ``/_control/`` (never part of PanDA's API).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import inspect
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import typing
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

try:  # the ``local-server`` extra, not installed with the provider alone
    import jwt
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ModuleNotFoundError as exc:
    raise ImportError(f"The local PanDA server needs {exc.name!r}: "
                      "pip install 'airflow-provider-panda[local-server]'") from exc

from airflow_provider_panda import api
from airflow_provider_panda.testing import messages
from airflow_provider_panda.testing.sim import SUBMIT_SUCCESS_CODES, PandaSim, User

DEFAULT_VO = "atlas"
#: What a single-sign-on proxy in front of a server answers instead of the API (HTTP 200).
SSO_PAGE = ("<!DOCTYPE html><html><head><title>Sign in</title></head><body><form method='post' "
            "action='/auth/login'><input name='username'><input type='password' name='password'></form></body></html>")
#: How attempts end for task names carrying a tag (the example DAGs use them); others end done.
DEMO_RULES: list[tuple[str, list[str]]] = [
    (r"\.flaky\.", ["failed", "done"]),
    (r"\.failing\.", ["failed"]),
    (r"\.broken\.", ["broken"]),
    (r"\.exhausted\.", ["exhausted", "done"]),
    (r"\.lost\.", ["finished", "done"]),
    (r"\.slow\.", ["hang"]),
]
PROD_ROLE = "production"
DEFAULT_USERS = {
    "user": User("alice analyst", "alice", [DEFAULT_VO]),
    "other": User("bob other", "bob", [DEFAULT_VO]),
    "prod": User("paula production", "paula", [DEFAULT_VO, f"{DEFAULT_VO}/{PROD_ROLE}"]),
}


# --- tokens -----------------------------------------------------------------------------------


class TokenIssuer:
    """Mints and checks JWT id tokens (HS256, a key per server start) like an IdP would."""

    def __init__(self, issuer: str, lifetime: float = 3600.0) -> None:
        self.key = secrets.token_hex(32)
        self.issuer = issuer
        self.lifetime = lifetime
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> user key
        self.rotate = False  # hand out a new refresh token with each refresh (and retire the old one)
        #: Seconds added to the clock the tokens are checked against: a test moves time on to expire a
        #: token at the moment it chooses, instead of racing a short lifetime.
        self.clock_offset = 0.0
        self.checked: Counter[str] = Counter()  # how often each token was presented

    def mint(self, user_key: str, user: User, lifetime: float | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": user.preferred_username, "aud": "panda", "iat": now,
            "exp": now + int(lifetime if lifetime is not None else self.lifetime),
            "name": user.name, "preferred_username": user.preferred_username, "groups": list(user.groups),
            "user_key": user_key,
        }
        return jwt.encode(claims, self.key, algorithm="HS256")

    def check(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; raises ValueError with the real server's wording otherwise."""
        self.checked[token] += 1
        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience="panda",
                                options={"verify_exp": not self.clock_offset})
            if self.clock_offset and claims["exp"] <= time.time() + self.clock_offset:
                raise jwt.ExpiredSignatureError("Signature has expired")
        except jwt.InvalidTokenError as exc:
            raise ValueError(f"Invalid token. {exc}") from None
        return claims


# --- requests ---------------------------------------------------------------------------------


@dataclass
class Caller:
    """Who is asking: anonymous (no token) or a user, with or without the production role."""

    user: User | None
    prod: bool = False

    @property
    def secure(self) -> bool:
        return self.user is not None


class Handlers:
    """One method per served endpoint, named like panda-server's function, typed like it."""

    def __init__(self, sim: PandaSim, base_url: str) -> None:
        self.sim = sim
        self.base_url = base_url
        self.cache: dict[str, bytes] = {}

    # system
    def is_alive(self, caller: Caller) -> dict:
        return messages.envelope(True)

    # task
    def submit(self, caller: Caller, task_parameters: dict, parent_tid: int = None) -> dict:
        code, message = self.sim.submit(task_parameters, caller.user, caller.prod, parent_tid)
        if code not in SUBMIT_SUCCESS_CODES:
            return messages.envelope(False, message, int(code))
        return messages.envelope(True, message, api.task_id_in_message(message))

    def get_status(self, caller: Caller, task_id: int) -> dict:
        task = self.sim.visible(task_id)
        if task is None:
            return messages.envelope(False, messages.MESSAGE_TASK_NOT_FOUND)
        return messages.envelope(True, data=task.status)

    def get_task_parameters(self, caller: Caller, task_id: int) -> dict:
        task = self.sim.visible(task_id)
        if task is None:
            return messages.envelope(False, messages.MESSAGE_TASK_NOT_FOUND)
        return messages.envelope(True, data=task.params)

    def get_job_ids(self, caller: Caller, task_id: int) -> dict:
        task = self.sim.visible(task_id)
        return messages.envelope(True, data=task.all_job_ids if task else [])

    def _command(self, caller: Caller, task_id: int, command: str, **kwargs: Any) -> dict:
        code, message = self.sim.command(task_id, command, caller.user, caller.prod, **kwargs)
        return messages.envelope(code == 0, message, int(code))

    def kill(self, caller: Caller, task_id: int, broadcast: bool = False) -> dict:
        return self._command(caller, task_id, "kill")

    def finish(self, caller: Caller, task_id: int, soft: bool = False, broadcast: bool = False) -> dict:
        return self._command(caller, task_id, "finish", soft=soft)

    def retry(self, caller: Caller, task_id: int, new_parameters: dict = None, no_child_retry: bool = False,
              discard_events: bool = False, disable_staging_mode: bool = False,
              keep_gshare_priority: bool = False, ignore_hard_exhausted: bool = False) -> dict:
        if new_parameters:
            code, message = self.sim.retry_with_params(task_id, new_parameters, caller.user, caller.prod)
        else:
            code, message = self.sim.command(task_id, "retry", caller.user, caller.prod)
            if code == api.CommandCode.RETRY_ACTIVE:
                code, message = 0, messages.retry_active_message(message)
        return messages.envelope(True, message, int(code))  # retry always says success: true

    def resume(self, caller: Caller, task_id: int) -> dict:
        return self._command(caller, task_id, "resume")

    def reactivate(self, caller: Caller, task_id: int, keep_attempt_nr: bool = False,
                   trigger_job_generation: bool = False) -> dict:
        code, message = self.sim.reactivate(task_id)
        return messages.envelope(code == 0, message, code)

    def get_tasks_modified_since(self, caller: Caller, since: str, dn: str = None, full: bool = False,
                                 min_task_id: int = None, prod_source_label: str = "user") -> dict:
        try:
            when = datetime.strptime(since, api.TIME_FORMAT)
        except ValueError:
            return messages.envelope(True, data={})
        tasks = self.sim.modified_since(caller.user, when, prod_source_label)
        if min_task_id is not None:
            tasks = {k: v for k, v in tasks.items() if v["jediTaskID"] > min_task_id}
        return messages.envelope(True, data=tasks)

    def get_detailed_info(self, caller: Caller, task_id: int) -> dict:
        task = self.sim.visible(task_id)
        if task is None:
            return messages.envelope(False, "Task not found or error retrieving task info")
        return messages.envelope(True, data=self.sim.detailed_info(task))

    def get_tasks_detailed_info_since(self, caller: Caller, since: str = None, filters: str = None,
                                      n_tasks: int = 500) -> dict:
        criteria: dict[str, Any] = {}
        if filters:
            try:
                criteria = json.loads(filters)
            except ValueError:
                return messages.envelope(False, "filters is not valid JSON")
            if not isinstance(criteria, dict):
                return messages.envelope(False, "filters must be a JSON object")
        return messages.envelope(True, data=self.sim.find(caller.user, criteria, n_tasks))

    def get_datasets_and_files(self, caller: Caller, task_id: int,
                               dataset_types: typing.List[str] = ("input", "pseudo_input"),  # noqa: UP006
                               dataset_only: bool = False) -> dict:
        data = self.sim.datasets_and_files(task_id, list(dataset_types))
        if not data:
            return messages.envelope(False, api.MESSAGE_NO_DATASETS)
        return messages.envelope(True, data=data)

    def get_details(self, caller: Caller, task_id: int, include_parameters: bool = False,
                    include_status: bool = False) -> dict:
        details = self.sim.task_details(task_id, include_parameters, include_status)
        if not details:
            return messages.envelope(False, messages.MESSAGE_NO_DETAILS)
        return messages.envelope(True, data=details)

    def get_job_descriptions(self, caller: Caller, task_id: int, unsuccessful_only: bool = False) -> dict:
        return messages.envelope(True, data=self.sim.task_job_descriptions(task_id, unsuccessful_only))

    # job
    def get_description(self, caller: Caller, job_ids: typing.List[int]) -> dict:  # noqa: UP006
        return messages.envelope(True, data=self.sim.describe_jobs(job_ids[: api.MAX_JOB_IDS_PER_CALL]))

    def get_description_incl_archive(self, caller: Caller, job_ids: typing.List[int]) -> dict:  # noqa: UP006
        return messages.envelope(True, data=self.sim.describe_jobs(job_ids[: api.MAX_JOB_IDS_PER_CALL]))

    def kill_jobs(self, caller: Caller, job_ids: typing.List[int], code: int = None,  # noqa: UP006
                  use_email_as_id: bool = False, kill_options: typing.List[str] = []) -> dict:  # noqa: B006,UP006
        return messages.envelope(True, data=self.sim.kill_jobs(job_ids, caller.user, caller.prod))

    def get_metadata_for_analysis_jobs(self, caller: Caller, task_id: int) -> dict:
        metadata = self.sim.job_metadata(task_id)
        if not metadata:
            return messages.envelope(True, messages.MESSAGE_NO_METADATA, {})
        return messages.envelope(True, data=metadata)

    def set_command(self, caller: Caller, job_id: int, command: str) -> dict:
        success, message = self.sim.set_job_command(job_id, command)
        return messages.envelope(success, message)

    # file server
    def upload_file_recovery_request(self, caller: Caller, task_id: int = None, dry_run: bool = None,
                                     dataset: str = None, files: typing.List[str] = None,  # noqa: UP006
                                     no_child_retry: bool = True, resurrect_datasets: bool = False,
                                     force: bool = False, reproduce_parent: bool = False,
                                     reproduce_upto_nth_gen: int = 0) -> dict:
        if not task_id and not dataset:
            return messages.envelope(False, "Either task_id or dataset must be provided")
        if task_id:
            self.sim.recover_files(task_id, bool(dry_run), caller.user)
        log_name = self.sim.new_log_name()
        self.cache[log_name] = b""
        url = f"{self.base_url}/cache/{log_name}"
        return messages.envelope(True, messages.MESSAGE_RECOVERY_ACCEPTED, {"logFileURL": url})

    def upload_cache_file(self, caller: Caller, file: Any) -> dict:
        name, content, declared = file
        limit = api.upload_size_limit(name.split("/")[-1])
        if declared > limit:
            return messages.envelope(False, f"ERROR: upload failure. Exceeded size limit {declared // api.MB} MB > "
                                       f"{limit // api.MB} MB. Please remove redundant files from your work area")
        name = name.split("/")[-1]
        if name in self.sim.files and not name.endswith(".__ow__"):
            return messages.envelope(False, "ERROR: cannot overwrite file")
        crc = int.from_bytes(content[-8:-4], "little") if len(content) >= 8 else 0
        self.sim.files[name] = (caller.user.dn, len(content), crc)
        self.cache[name] = content
        return messages.envelope(True)

    def validate_cache_file(self, caller: Caller, file_size: int, checksum: typing.Union[int, str]) -> dict:  # noqa: UP007
        for name, (owner, size, crc) in self.sim.files.items():
            if owner == caller.user.dn and size == file_size and str(crc) == str(checksum):
                host = self.base_url.split("://", 1)[1]
                return messages.envelope(True, f"FOUND:{host}:{name}")
        return messages.envelope(False, "NOTFOUND")


#: Endpoint name -> handler method name, where they differ from the endpoint's last part.
HANDLER_NAMES = {api.JOB_KILL.name: "kill_jobs"}
SERVED = {ep.name: ep for ep in api.ENDPOINTS}


def _cast(value: Any, hint: Any, default: Any) -> Any:
    """panda-server's GET casting: strings to the handler's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value == "None" and default is None:
        return None
    if hint is str:
        return value
    if hint is bool:
        return value.lower() in ("true", "1")
    if hint is int:
        return int(float(value))
    if origin is list and args:
        items = value if isinstance(value, list) else [value]
        if args[0] is int:
            return [int(float(i)) for i in items]
        return items
    if origin in (typing.Union,):
        return value
    if not isinstance(value, hint):
        value = ast.literal_eval(value)
    return value


def _check_type(name: str, value: Any, hint: Any, default: Any) -> str | None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or hint is typing.Any:
        return None
    if origin is list:
        if not isinstance(value, list):
            return f"Type error: '{name}' must be of type list, got {type(value).__name__}."
        if args and not all(isinstance(i, args[0]) and not isinstance(i, bool) for i in value):
            return f"Type error: All elements in '{name}' must be {args[0].__name__}."
        return None
    if isinstance(hint, type) and not isinstance(value, hint) and not (value is None and default is None):
        return f"Type error: '{name}' must be of type {hint.__name__}, got {type(value).__name__}."
    return None


def bind(method: Any, params: dict[str, Any], http_method: str) -> tuple[dict[str, Any] | None, str | None]:
    """Bind and cast parameters as panda-server's request_validation does; (kwargs, error)."""
    sig = inspect.signature(method)
    try:
        bound = sig.bind(None, **params)
    except TypeError as exc:
        return None, f"Argument error: {exc}"
    bound.apply_defaults()
    hints = typing.get_type_hints(method)
    kwargs = dict(bound.arguments)
    kwargs.pop("caller", None)
    for name, value in list(kwargs.items()):
        hint = hints.get(name)
        default = sig.parameters[name].default
        if hint is None or hint is Any or (default is not inspect.Parameter.empty and value == default):
            continue
        if http_method == "GET" and isinstance(value, (str, list)):
            try:
                value = _cast(value, hint, default)
            except (ValueError, TypeError, SyntaxError):
                hint_name = getattr(hint, "__name__", str(hint))
                return None, (f"Type error: '{name}' with value '{value}' could not be casted to type "
                              f"{hint_name} from {type(value).__name__}.")
            kwargs[name] = value
        error = _check_type(name, value, hint, default)
        if error:
            return None, error
    return kwargs, None


class LocalPandaApp:
    """The ASGI app: PanDA's dispatch rules in front of :class:`Handlers`."""

    def __init__(self, sim: PandaSim, issuer: TokenIssuer, base_url: str = "http://127.0.0.1") -> None:
        self.sim = sim
        self.issuer = issuer
        self.handlers = Handlers(sim, base_url)
        self.users: dict[str, User] = dict(DEFAULT_USERS)
        self.requests: Counter[str] = Counter()
        self.clients: Counter[str] = Counter()  # API requests per User-Agent
        #: API requests and answer bytes per call and set of parameter names ("module/method?a&b").
        self.variants: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        #: The identity provider: "ok", "503" (its token endpoint fails) or "down" (unreachable).
        self.idp = "ok"
        #: peer address -> DER client certificate presented in the TLS handshake (``client_ca`` servers).
        self.peer_certs: dict[Any, bytes] = {}
        #: Subject common names of the client certificates API requests came with, in order.
        self.client_cert_names: list[str] = []
        #: Faults for the next API requests, one each: "500" (answer 500 without acting),
        #: "after:503" (act, then answer 503), "slow:2.5" (act, then answer after 2.5 s),
        #: "body:TEXT" (act, then answer 200 with TEXT instead of the envelope), "echo:403" (answer
        #: 403 quoting the request's Authorization header, as a careless proxy might), "html" (answer
        #: 200 with an SSO login page without acting, as a proxy in front of the server may), "cut"
        #: (act, then send only the first half of the answer), "empty" (answer success with ``{}``
        #: without acting: getJediTasksInTimeRange on a database error)
        #: A fault ending "@<endpoint>" (``"after:503@task/submit"``) waits for a request to that endpoint.
        self.faults: deque[str] = deque()
        #: Random faults: each API request draws one of ``fault_kinds`` with this probability.
        self.fault_rate = 0.0
        self.fault_kinds: list[str] = ["500", "502", "503", "429", "after:503", "after:502"]
        self._rng = random.Random(0)
        #: Task-name pattern -> seconds: the next submission of such a name is answered that late.
        self.submit_delays: dict[str, float] = {}
        self.app = Starlette(routes=[
            Route("/api/{version}/{module}/{method}", self.dispatch, methods=["GET", "POST", "PUT", "DELETE"]),
            Route("/auth/{vo}_auth_config.json", self.auth_config, methods=["GET"]),
            Route("/oidc/.well-known/openid-configuration", self.oidc_discovery, methods=["GET"]),
            Route("/oidc/token", self.oidc_token, methods=["POST"]),
            Route("/cache/{path:path}", self.cache_file, methods=["GET"]),
            Route("/monitor/task/{task_id:int}/", self.monitor_task, methods=["GET"]),
            Route("/_control/{action}", self.control, methods=["GET", "POST"]),
            Route("/_control/tasks/{task_id:int}", self.control_task, methods=["GET", "POST"]),
        ])

    @property
    def base_url(self) -> str:
        return self.handlers.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.handlers.base_url = value

    # --- PanDA --------------------------------------------------------------------------------

    def _next_fault(self, endpoint: str) -> str:
        """The first queued fault for this endpoint (``"after:503@task/submit"`` is for that
        endpoint only; one without ``@`` is for any request), else maybe a random one."""
        for index, queued in enumerate(self.faults):
            kind, _, only = queued.partition("@")
            if not only or only == endpoint:
                del self.faults[index]
                return kind
        return self._random_fault()

    def _random_fault(self) -> str:
        if self.fault_rate and self._rng.random() < self.fault_rate:
            return self._rng.choice(self.fault_kinds)
        return ""

    def _caller(self, request: Request) -> Caller | str:
        """The caller from the bearer token and Origin, or the 403 text for a refused token."""
        header = request.headers.get("authorization")
        if not header:
            name = self._client_cert_name(request)
            user = next((u for u in self.users.values() if u.name == name), None) if name else None
            return Caller(user)  # a grid certificate, as the real server maps a DN
        parts = header.split()
        token = parts[1] if len(parts) == 2 else ""
        try:
            claims = self.issuer.check(token)
        except ValueError as exc:
            return f"{messages.MESSAGE_TOKEN_FAILED} {exc}"
        origin = request.headers.get("origin") or ""
        vo, _, role = origin.replace(".", ":", 1).partition(":")
        if vo != DEFAULT_VO:
            return f"{messages.MESSAGE_TOKEN_FAILED} Unknown vo : {vo or None}"
        user = self.users.get(claims.get("user_key", "")) or User(
            claims.get("name", claims["sub"]), claims.get("preferred_username", claims["sub"]),
            list(claims.get("groups", [])))
        groups = claims.get("groups", [])
        if role:
            if f"{vo}/{role}" not in groups:
                return f"{messages.MESSAGE_TOKEN_FAILED} Not a member of the {vo}/{role} group"
            return Caller(user, prod=role == PROD_ROLE)
        if vo not in groups:
            return f"{messages.MESSAGE_TOKEN_FAILED} Not a member of the {vo} group"
        return Caller(user)

    def _client_cert_name(self, request: Request) -> str | None:
        der = self.peer_certs.get(tuple(request.scope.get("client") or ()))
        if not der:
            return None
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    def _note_client_cert(self, request: Request) -> None:
        name = self._client_cert_name(request)
        if name:
            self.client_cert_names.append(name)

    async def _params(self, request: Request, json_body: bool) -> dict[str, Any] | None:
        if request.method == "GET":
            params: dict[str, Any] = {}
            for key, value in request.query_params.multi_items():
                if key in params:
                    params[key] = (params[key] if isinstance(params[key], list) else [params[key]]) + [value]
                else:
                    params[key] = value
            return params
        if json_body:
            body = await request.body()
            return json.loads(body) if body else {}
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_part_size=api.SANDBOX_LIMIT + api.MB)
            params = {}
            for key, value in form.multi_items():
                if hasattr(value, "read"):
                    declared = int(request.headers.get("content-length") or 0)
                    params[key] = (value.filename or key, await value.read(), declared)
                else:
                    params[key] = value
            return params
        form = await request.form()
        return dict(form)

    async def dispatch(self, request: Request) -> Response:
        version, module, method = (request.path_params[k] for k in ("version", "module", "method"))
        endpoint = SERVED.get(f"{module}/{method}") if version in ("v1", "latest") else None
        handler = getattr(self.handlers, HANDLER_NAMES.get(endpoint.name, method), None) if endpoint else None
        self.requests[f"{module}/{method}"] += 1
        self.clients[request.headers.get("user-agent", "")] += 1
        if handler is None:
            return Response(f"ERROR : method {method} is forbidden", 403, media_type="text/plain")
        fault = self._next_fault(endpoint.name)
        response = await self._dispatch(request, endpoint, handler, fault)
        variant = f"{module}/{method}?" + "&".join(sorted(request.query_params.keys()))
        self.variants[variant] += 1
        self.bytes_out[variant] += len(response.body)
        return response

    async def _dispatch(self, request: Request, endpoint: api.Endpoint, handler: Any, fault: str) -> Response:
        if fault.isdigit():
            return Response(f"injected fault {fault}", int(fault), media_type="text/plain")
        if fault == "html":  # a proxy or SSO page in front of the server, answering 200
            return Response(SSO_PAGE, 200, media_type="text/html")
        if fault == "missing":  # the real server's "not found" on a database error (getTaskStatus gives [])
            detailed = endpoint is api.TASK_DETAILED_INFO
            message = messages.MESSAGE_NO_DETAILS if detailed else messages.MESSAGE_TASK_NOT_FOUND
            return Response(json.dumps(messages.envelope(False, message)), 200, media_type="text/plain")
        if fault == "empty":  # getJediTasksInTimeRange on a database error
            return Response(json.dumps(messages.envelope(True, data={})), 200, media_type="text/plain")
        if fault.startswith("echo:"):  # a careless server or proxy quoting the request's credentials
            text = f"ERROR : rejected {request.headers.get('authorization')} from {request.headers.get('origin')}"
            return Response(text, int(fault[5:]), media_type="text/plain")
        self._note_client_cert(request)
        caller = self._caller(request)
        if isinstance(caller, str):
            return Response(f"ERROR : {caller}", 403, media_type="text/plain")
        content_type = request.headers.get("content-type")
        json_app = content_type == "application/json" or request.headers.get("accept") == "application/json"
        json_body = content_type == "application/json" and request.method in ("POST", "PUT")
        try:
            params = await self._params(request, json_body)
        except ValueError as exc:
            return Response(f"ERROR : received invalid JSON : {exc}", 500, media_type="text/plain")
        result = self._validated(endpoint, handler, caller, request.method, params or {})
        name = str((params or {}).get("task_parameters", {}).get("taskName", "")) if endpoint is api.TASK_SUBMIT else ""
        for pattern, seconds in list(self.submit_delays.items()):
            if name and re.search(pattern, name):  # act, then answer late: a window to kill the caller in
                del self.submit_delays[pattern]
                await asyncio.sleep(seconds)
        if fault.startswith("after:"):
            return Response("injected fault after acting", int(fault[6:]), media_type="text/plain")
        if fault.startswith("slow:"):
            await asyncio.sleep(float(fault[5:]))
        if fault.startswith("body:"):
            return Response(fault[5:], 200, media_type="text/plain")
        text = json.dumps(result, default=messages.encode_special) if json_app else str(result)
        if fault == "cut":  # the connection dropped mid-answer by something on the way
            text = text[: len(text) // 2]
        return Response(text, 200, media_type="text/plain")

    def _validated(self, endpoint: api.Endpoint, handler: Any, caller: Caller, http_method: str,
                   params: dict[str, Any]) -> dict[str, Any]:
        """request_validation: secure, production role, HTTP method, arguments, task ownership."""
        if endpoint.secure and not caller.secure:
            return messages.envelope(False, messages.MESSAGE_SSL)
        if endpoint.production and not caller.prod:
            return messages.envelope(False, api.MESSAGE_PROD_ROLE)
        if endpoint.method != http_method and endpoint not in (api.JOB_DESCRIPTION, api.JOB_DESCRIPTION_ARCHIVE):
            return messages.envelope(False, f"expecting {endpoint.method}, received {http_method}")
        kwargs, error = bind(handler, params, http_method)
        if error:
            return messages.envelope(False, error)
        if endpoint.task_owner and kwargs.get("task_id"):
            if not self.sim.owns(kwargs["task_id"], caller.user, caller.prod):
                return messages.envelope(False, api.MESSAGE_TASK_OWNER)
        return handler(caller, **kwargs)

    async def auth_config(self, request: Request) -> Response:
        vo = request.path_params["vo"]
        return JSONResponse({
            "client_id": f"panda-{vo}", "client_secret": "local-secret",
            "oidc_config_url": f"{self.base_url}/oidc/.well-known/openid-configuration", "audience": "panda",
            "vo": vo,
        })

    async def oidc_discovery(self, request: Request) -> Response:
        # "down": the token endpoint is on a port nobody listens on (connection refused)
        token_url = "http://127.0.0.1:9/oidc/token" if self.idp == "down" else f"{self.base_url}/oidc/token"
        return JSONResponse({"issuer": self.issuer.issuer, "token_endpoint": token_url,
                             "device_authorization_endpoint": f"{self.base_url}/oidc/device"})

    async def oidc_token(self, request: Request) -> Response:
        """The IdP's token endpoint, for the refresh grant only (as panda-client uses it)."""
        form = await request.form()
        self.requests["oidc/token"] += 1
        if self.idp != "ok":
            return JSONResponse({"error": "temporarily_unavailable"}, 503)
        if form.get("grant_type") != "refresh_token" or not str(form.get("client_id", "")).startswith("panda-"):
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        key = self.issuer.refresh_tokens.get(str(form.get("refresh_token", "")))
        if key is None:
            return JSONResponse({"error": "invalid_grant"}, 400)
        token = self.issuer.mint(key, self.users[key])
        refresh = str(form["refresh_token"])
        if self.issuer.rotate:  # the IdP rotates refresh tokens: the one used stops working
            del self.issuer.refresh_tokens[refresh]
            refresh = secrets.token_urlsafe(24)
            self.issuer.refresh_tokens[refresh] = key
        return JSONResponse({"id_token": token, "access_token": token, "token_type": "Bearer",
                             "refresh_token": refresh, "expires_in": int(self.issuer.lifetime)})

    async def cache_file(self, request: Request) -> Response:
        content = self.handlers.cache.get(request.path_params["path"])
        if content is None:
            return Response("not found", 404, media_type="text/plain")
        return Response(content, 200, media_type="application/octet-stream")

    async def monitor_task(self, request: Request) -> Response:
        """A bare stand-in for the BigPanDA task page, so monitor links work offline."""
        from html import escape

        task_id = request.path_params["task_id"]
        with self.sim.lock:
            self.sim.advance()
            task = self.sim.tasks.get(task_id)
            if task is None:
                return Response(f"<h1>Task {task_id} not found</h1>", 404, media_type="text/html")
            rows = "".join(
                f"<tr><td>{j}</td><td>{escape(self.sim.jobs[j].status)}</td><td>{self.sim.jobs[j].attempt}</td>"
                f"<td>{escape(str(self.sim.jobs[j].error.get('pilotErrorDiag') or ''))}</td></tr>"
                for j in task.job_ids)
            html = (f"<html><head><title>PanDA task {task_id}</title></head><body>"
                    f"<h1>Task {task_id}: {escape(task.status)}</h1><p>{escape(task.name)} (owner "
                    f"{escape(task.owner)}, attempt {task.attempt})</p><table border=1><tr><th>PandaID</th>"
                    f"<th>status</th><th>attempt</th><th>error</th></tr>{rows}</table></body></html>")
        return Response(html, 200, media_type="text/html")

    # --- control ------------------------------------------------------------------------------

    async def control(self, request: Request) -> Response:
        action = request.path_params["action"]
        body = await request.json() if request.method == "POST" and await request.body() else {}
        if action == "tasks":
            with self.sim.lock:
                self.sim.advance()
                return JSONResponse([_task_view(t) for t in self.sim.tasks.values()])
        if action == "rules":
            try:
                if body.get("replace", False):
                    self.sim.set_rules([])
                for pattern, outcomes in reversed(body.get("rules", [])):
                    self.sim.add_rule(pattern, outcomes)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, 400)
            return JSONResponse({"ok": True})
        if action == "clock":
            if "step" in body:
                self.sim.step = float(body["step"])
            if "freeze" in body:
                self.sim.clock.freeze(bool(body["freeze"]))
            if "advance" in body:
                self.sim.clock.advance(float(body["advance"]))
            self.sim.advance()
            return JSONResponse({"step": self.sim.step})
        if action == "token":
            key = body.get("user", "user")
            user = self.users.get(key)
            if user is None:
                groups = body.get("groups", [DEFAULT_VO])
                user = User(body.get("name", key), body.get("preferred_username", key), groups)
                self.users[key] = user
            return JSONResponse({"token": self.issuer.mint(key, user, body.get("lifetime"))})
        if action == "delay_submit":
            self.submit_delays[body["pattern"]] = float(body["seconds"])
            return JSONResponse({"ok": True})
        if action == "bulk":
            user = self.users[body.get("user", "user")]
            ids = self.sim.bulk_running(int(body.get("n", 1)), user, body.get("outcomes", ["hang"]),
                                        int(body.get("jobs", 1)), float(body.get("age", 0)))
            return JSONResponse({"ids": ids})
        if action == "faults":
            self.faults.extend(str(f) for f in body.get("faults", []))
            if "rate" in body:
                self.fault_rate = float(body["rate"])
                self.fault_kinds = list(body.get("kinds", self.fault_kinds))
                self._rng.seed(body.get("seed", 0))
            return JSONResponse({"pending": len(self.faults), "rate": self.fault_rate})
        if action == "requests":
            return JSONResponse({"by_call": dict(self.requests), "by_client": dict(self.clients),
                                 "by_variant": dict(self.variants), "bytes_by_variant": dict(self.bytes_out)})
        if action == "idp":
            if body.get("mode") not in ("ok", "503", "down"):
                return JSONResponse({"error": "mode is ok, 503 or down"}, 400)
            self.idp = body["mode"]
            return JSONResponse({"mode": self.idp})
        if action == "recoveries":
            return JSONResponse(self.sim.recovery_requests)
        return JSONResponse({"error": f"unknown control action {action}"}, 404)

    async def control_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        if task_id not in self.sim.tasks:
            return JSONResponse({"error": "no such task"}, 404)
        if request.method == "POST":
            body = await request.json()
            try:
                self.sim.force(task_id, body.get("status"), body.get("outcomes"), body.get("backdate"))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
        with self.sim.lock:
            self.sim.advance()
            return JSONResponse(_task_view(self.sim.tasks[task_id]))


def _task_view(task: Any) -> dict[str, Any]:
    return {"jediTaskID": task.task_id, "taskName": task.name, "status": task.status, "attempt": task.attempt,
            "owner": task.owner, "outcomes": task.outcomes, "jobs": list(task.job_ids),
            "block_jobs": len(task.block), "recoveries": task.recoveries, "reads": task.reads}


# --- running it -------------------------------------------------------------------------------


class LocalPandaServer:
    """Run the local server in a background thread on 127.0.0.1 (port 0 picks a free one).

    Usable as a context manager; :meth:`connection` gives the Airflow connection for a user.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", step: float = 0.5,
                 rules: list[tuple[str, list[str]]] | None = None, token_lifetime: float = 3600.0,
                 tls: bool = False, client_certs: bool = False) -> None:
        self.host = host
        self.sim = PandaSim(step=step, rules=DEMO_RULES if rules is None else rules)
        self.issuer = TokenIssuer("local-panda", token_lifetime)
        self.panda = LocalPandaApp(self.sim, self.issuer)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.tls = _self_signed_certificate(host) if tls or client_certs else None
        #: With client_certs the server asks for a client certificate in the handshake (as the real
        #: server does for grid proxies) and maps its subject CN to a user; :meth:`x509_proxy` makes one.
        self.client_ca = _self_signed_certificate("local-panda-client-ca") if client_certs else None
        self.url = f"{'https' if self.tls else 'http'}://{host}:{self.port}"
        self.panda.base_url = self.url
        self.issuer.issuer = self.url
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def token(self, user: str = "user", lifetime: float | None = None) -> str:
        return self.issuer.mint(user, self.panda.users[user], lifetime)

    def refresh_token(self, user: str = "user") -> str:
        """A refresh token the server's token endpoint exchanges for new id tokens of ``user``."""
        token = secrets.token_urlsafe(24)
        self.issuer.refresh_tokens[token] = user
        return token

    def x509_proxy(self, path: str, user: str = "user", lifetime: float = 3600.0) -> str:
        """Write a grid-proxy-like file (certificate and key, PEM) for ``user``, signed by the
        client CA this server trusts (``client_certs=True``); returns the path."""
        if not self.client_ca:
            raise RuntimeError("start the server with client_certs=True to use x509 proxies")
        return _client_certificate(path, self.panda.users[user].name, self.client_ca, lifetime)

    def connection(self, user: str = "user", **extra: Any) -> dict[str, Any]:
        """Airflow's JSON form of a connection to this server as ``user`` (prod gets the role)."""
        origin = f"{DEFAULT_VO}:{PROD_ROLE}" if user == "prod" else DEFAULT_VO
        tls = {"ca_path": self.tls[0]} if self.tls else {}
        return {"conn_type": "panda", "host": self.url, "password": self.token(user),
                "extra": {"vo": origin, "monitor_url": self.url + "/monitor", **tls, **extra}}

    def connection_uri_env(self, user: str = "user", **extra: Any) -> str:
        return json.dumps(self.connection(user, **extra))

    def start(self) -> LocalPandaServer:
        tls: dict[str, Any] = {"ssl_certfile": self.tls[0], "ssl_keyfile": self.tls[1]} if self.tls else {}
        if self.client_ca:
            import ssl

            tls.update(ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_ca_certs=self.client_ca[0],
                       http=_recording_protocol(self.panda.peer_certs))
        config = uvicorn.Config(self.panda.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30, **tls)
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="local-panda-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the local PanDA server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> LocalPandaServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _recording_protocol(peer_certs: dict[Any, bytes]) -> type:
    """uvicorn's HTTP protocol, recording each TLS connection's client certificate by peer address."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Recording(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            peer = tuple(transport.get_extra_info("peername") or ())[:2]
            if der:
                peer_certs[peer] = der
            else:
                peer_certs.pop(peer, None)

    return Recording


def _client_certificate(path: str, common_name: str, ca: tuple[str, str], lifetime: float) -> str:
    """A client certificate for ``common_name`` signed by ``ca``, written with its key to ``path``."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    with open(ca[0], "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    with open(ca[1], "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    start = min(now - dt.timedelta(minutes=5), now + dt.timedelta(seconds=lifetime) - dt.timedelta(minutes=10))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(now + dt.timedelta(seconds=lifetime))
            .sign(ca_key, hashes.SHA256()))
    with open(path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def _self_signed_certificate(host: str) -> tuple[str, str]:
    """A throwaway certificate for ``host`` (as IP SAN) and its key, as files; the certificate is
    also the CA a client verifies against (extra ``ca_path``)."""
    import datetime as dt
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.timezone.utc)
    san = [x509.DNSName("localhost")]
    try:
        san.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        san.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2)).add_extension(x509.SubjectAlternativeName(san), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True).sign(key, hashes.SHA256()))
    folder = tempfile.mkdtemp(prefix="local-panda-tls-")
    cert_path, key_path = f"{folder}/cert.pem", f"{folder}/key.pem"
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


def _parse_rule(text: str) -> tuple[str, list[str]]:
    pattern, _, outcomes = text.rpartition("=")
    if not pattern:
        raise argparse.ArgumentTypeError("a rule is PATTERN=OUTCOME[,OUTCOME...], e.g. 'flaky=failed,done'")
    return pattern, outcomes.split(",")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8443, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--step", type=float, default=1.0, help="seconds per task status step")
    parser.add_argument("--rule", action="append", type=_parse_rule, default=[],
                        help="PATTERN=OUTCOMES: task names matching PATTERN end each attempt with the "
                             "next outcome (done, finished, failed, broken, exhausted, hang); "
                             "checked before the built-in tags .flaky. .failing. .broken. .exhausted. "
                             ".lost. .slow.")
    parser.add_argument("--tls", action="store_true",
                        help="serve https with a self-signed certificate (the connection gets its ca_path)")
    parser.add_argument("--user", default="user", choices=sorted(DEFAULT_USERS),
                        help="identity of the printed connection ('prod' has the production role)")
    args = parser.parse_args(argv)
    server = LocalPandaServer(port=args.port, host=args.host, step=args.step, rules=args.rule + DEMO_RULES,
                              tls=args.tls).start()
    # with a refresh token of its own IdP, so a session longer than the id token's hour renews it
    print(server.connection_uri_env(args.user, refresh_token=server.refresh_token(args.user)), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
