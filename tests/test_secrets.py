"""No credential reaches an exception text, a trigger event, a log line, an XCom, a rendered field or
a repr, whatever its source: the password, extra ``token``, a ``token_file`` (raw and the IdP's JSON
answer), a refresh token and the token a refresh obtained, the x509 proxy's private key.

For each source a flow runs against a real local server (127.0.0.1) that quotes the request's
Authorization header back in its errors (403, 502), through the sync hook, the async client, a
trigger and a DAG (a sync and a deferred wait), and a careless library logs the credential
material (the connection, the token file, the proxy file, the request's headers) the way a log line
of a real worker or triggerer is written: through Airflow's secrets masker (which knows a
connection's password and token extras by itself, but a token file's tokens, a refreshed token and
the proxy's key only because the hook registered them). Then everything is scanned for every secret
of the source: 0 hits. A refresh token only travels to the IdP: an IdP that quotes it back when it
refuses the grant is its own test.

The negative control runs the same flows with our redaction (:func:`masking.redact`, the one place
every text goes through) as the identity and without Airflow's masker, and must find every secret
kind, and each id token the server quoted in the exception texts, the events and our log lines: a
scan that cannot see a secret proves nothing. (The DAG's output is not required there: Airflow's
console log hides anything shaped like a JWT on its own; it is scanned all the same.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from airflow_runs import run_dag
from conftest import PEM_KEY_BEGIN, PEM_KEY_END, task_params

from airflow_provider_panda import calls, masking, transport
from airflow_provider_panda.exceptions import PandaError
from airflow_provider_panda.hooks.panda import AsyncPandaClient, PandaHook
from airflow_provider_panda.testing.server import LocalPandaServer
from airflow_provider_panda.triggers.wait import PandaTaskTrigger

SOURCES = ["password", "token", "token_file", "token_file_json", "refresh", "proxy"]
LOG = logging.getLogger("airflow_provider_panda.tests.secrets")
#: The id tokens a server can quote back (the Authorization header): the control must find these in
#: exception texts and events, not only in the careless log lines.
SENT = {"id token (password)", "id token (extra token)", "id token (token_file)", "id token (token_file JSON)",
        "refreshed id token"}


@pytest.fixture(scope="module")
def tls_server():
    """For the proxy: a server over https that asks for client certificates, as the real one does."""
    with LocalPandaServer(step=0.05, client_certs=True) as server:
        yield server
        # the DAG runs' hooks keep connections alive: stop without waiting for them to close (10 s)
        server._server.force_exit = True


@dataclass
class Flow:
    """One credential source: its connection, its secrets by kind, and what a careless library
    would log (the credential material as the user has it)."""

    source: str
    server: LocalPandaServer
    conn_id: str
    conn: dict[str, Any]
    secrets: dict[str, list[str]]
    material: list[str] = field(default_factory=list)


def make_flow(source: str, panda_server, tls_server, tmp_path: Path, monkeypatch) -> Flow:
    server = tls_server if source == "proxy" else panda_server
    conn = server.connection(max_retries=1, retry_wait=0.01)
    token = conn.pop("password")
    secrets: dict[str, list[str]] = {}
    material: list[str] = []
    if source == "password":
        conn["password"] = token
        secrets["id token (password)"] = [token]
    elif source == "token":
        conn["extra"]["token"] = token
        secrets["id token (extra token)"] = [token]
    elif source == "token_file":
        path = tmp_path / "token"
        path.write_text(token + "\n")
        conn["extra"]["token_file"] = str(path)
        secrets["id token (token_file)"] = [token]
        material.append(path.read_text())
    elif source == "token_file_json":  # the IdP's answer as `oidc-token` or a device flow writes it
        path = tmp_path / "token.json"
        answer = {"id_token": token, "access_token": server.token("user", lifetime=1800), "refresh_token":
                  server.refresh_token("user"), "token_type": "Bearer", "expires_in": 3600}
        path.write_text(json.dumps(answer, indent=1))
        conn["extra"]["token_file"] = str(path)
        secrets.update({"id token (token_file JSON)": [token], "refresh token (token_file JSON)":
                        [answer["refresh_token"]], "access token (token_file JSON)": [answer["access_token"]]})
        material.append(path.read_text())
    elif source == "refresh":  # expires within the margin: refreshed before the first request
        conn["password"] = server.token("user", lifetime=60)
        conn["extra"]["refresh_token"] = server.refresh_token("user")
        secrets.update({"expiring id token (password)": [conn["password"]],
                        "refresh token (extra)": [conn["extra"]["refresh_token"]]})
    elif source == "proxy":
        proxy = server.x509_proxy(str(tmp_path / "x509up"), "user")
        conn["extra"]["x509_proxy"] = proxy
        text = Path(proxy).read_text()
        key = re.search(f"{PEM_KEY_BEGIN}\n(.*?){PEM_KEY_END}", text, re.DOTALL)
        assert key, "the proxy holds its key"
        secrets["x509 proxy private key"] = [line for line in key.group(1).split() if len(line) > 16]
        material.append(text)
    conn_id = f"panda_secret_{source}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    material.append(json.dumps(conn))  # a library logging the connection it was given
    return Flow(source, server, conn_id, conn, secrets, material)


class MaskedCapture(logging.Handler):
    """Log lines as a real worker or triggerer writes them: through Airflow's secrets masker (the
    ``mask_logs`` processor of its log pipeline). ``dag.test()`` and plain pytest do not mask, so
    lines written there are scanned raw, as they are."""

    def __init__(self, masked: bool) -> None:
        super().__init__(logging.DEBUG)
        from airflow.sdk.log import mask_logs

        self.lines: list[str] = []
        self.mask = (lambda text: mask_logs(None, "info", {"event": text})["event"]) if masked else (lambda t: t)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.mask(record.getMessage()))


def echo(server: LocalPandaServer, fault: str, endpoint: str, times: int = 1) -> None:
    """The next ``times`` requests to ``endpoint`` answer ``fault`` quoting the Authorization header."""
    server.panda.faults.extend([f"{fault}@{endpoint}"] * times)


def run_flow(flow: Flow, caplog, capfd, masked: bool) -> dict[str, list[str]]:
    """Everything a user or a log sees from the flows of one credential source, by channel."""
    server, conn_id = flow.server, flow.conn_id
    tries = flow.conn["extra"]["max_retries"] + 1
    texts: dict[str, list[str]] = {name: [] for name in ("exceptions", "events", "reprs", "logs", "worker logs",
                                                         "xcoms and rendered fields", "output")}
    careless = logging.getLogger("careless.library")
    capture = MaskedCapture(masked)
    careless.addHandler(capture)
    careless.propagate = False
    caplog.set_level(logging.DEBUG)
    try:
        hook = PandaHook(conn_id)
        task_id = hook.submit_task(task_params(f"secret{flow.source}"))
        texts["reprs"] += [repr(hook), repr(hook.config), str(hook.config)]
        echo(server, "echo:403", "task/get_tasks_modified_since")
        texts["reprs"].append(repr(hook.test_connection()))

        # the sync hook: a 403 (not retried) and a 502 (retried, logged, then raised)
        for fault in ("echo:403", "echo:502"):
            echo(server, fault, "task/get_status", tries if fault == "echo:502" else 1)
            with pytest.raises(PandaError) as info:
                hook.get_task_status(task_id)
            assert "rejected" in str(info.value), info.value  # the server really quoted the header
            texts["exceptions"] += [str(info.value), repr(info.value), repr(info.value.args)]

        async def async_flow() -> list[Any]:
            client = await AsyncPandaClient.for_connection(conn_id, LOG)
            found: list[Any] = [repr(client)]
            try:
                for fault in ("echo:403", "echo:502"):
                    echo(server, fault, "task/get_status", tries if fault == "echo:502" else 1)
                    try:
                        await client.get_task_status(task_id)
                    except PandaError as exc:
                        found.append(exc)
            finally:
                await client.aclose()
            # a trigger reading its task on its own: the 403 ends the wait with an error event
            echo(server, "echo:403", "task/get_status")
            trigger = PandaTaskTrigger(task_id, conn_id, poll_interval=0.02, shared_poller=False)
            found.append(repr(trigger.serialize()))
            async for event in trigger.run():
                found.append(event)
                break
            return found

        reprs, *errors, serialized, event = asyncio.run(asyncio.wait_for(async_flow(), 60))
        assert len(errors) == 2 and all("rejected" in str(exc) for exc in errors), errors
        texts["reprs"].append(reprs)
        texts["exceptions"] += [text for exc in errors for text in (str(exc), repr(exc))]
        assert event.payload["status"] == "error" and "rejected" in event.payload["message"], event.payload
        texts["events"] += [serialized, repr(event), json.dumps(event.payload, default=str)]

        # a DAG: a sync wait and a deferred one, each reading through a fault quoting the header
        echo(server, "echo:502", "task/get_status", tries)
        echo(server, "echo:502", "task/get_tasks_modified_since", 2)
        run = run_dag("SubmitTaskOperator(task_id='sync', panda_conn_id=$conn, task_params=$sync, "
                      "poll_interval=0.05, deferrable=False)\n"
                      "SubmitTaskOperator(task_id='deferred', panda_conn_id=$conn, task_params=$deferred, "
                      "poll_interval=0.05, deferrable=True)",
                      conn=repr(conn_id), sync=repr(task_params(f"secretsync{flow.source}")),
                      deferred=repr(task_params(f"secretdeferred{flow.source}")))
        assert run.states == {"sync": "success", "deferred": "success"}, run.states
        texts["xcoms and rendered fields"] += stored_for([run])

        # a careless library logging what it was given, and the request as sent (the token in use)
        for text in flow.material:
            careless.warning("debug: %s", text)
        careless.warning("request: %s", transport.prepare(calls.get_task_status(task_id), PandaHook(conn_id).config))
        if flow.source == "refresh":  # the token the refresh obtained, now known
            flow.secrets["refreshed id token"] = [PandaHook(conn_id).config.read_token()]
            assert flow.secrets["refreshed id token"] != flow.secrets["expiring id token (password)"]
    finally:
        careless.removeHandler(capture)
        careless.propagate = True
    out, err = capfd.readouterr()
    texts["output"] += [out, err]
    texts["logs"] += [record.getMessage() for record in caplog.records] + [caplog.text]
    texts["worker logs"] += capture.lines
    assert "rejected" in "\n".join(texts["logs"])  # the quoted header reached our log lines too
    return texts


def hits(flow: Flow, texts: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """Occurrences of each secret kind in each channel (0 everywhere, or a leak)."""
    joined = {channel: "\n".join(map(str, found)) for channel, found in texts.items()}
    return {kind: {channel: sum(text.count(value) for value in values) for channel, text in joined.items()}
            for kind, values in flow.secrets.items()}


@pytest.mark.parametrize("source", SOURCES)
def test_no_secret_anywhere(source, panda_server, tls_server, monkeypatch, tmp_path, caplog, capfd):
    """Exception texts (sync and async), trigger events, reprs, our log lines as written (not masked),
    log lines of a careless library through Airflow's masker, XComs and rendered fields, and the
    output of a DAG run. Task log *files* are scanned in test_real_airflow.py, where a real worker
    and triggerer write them."""
    flow = make_flow(source, panda_server, tls_server, tmp_path, monkeypatch)
    try:
        found = hits(flow, run_flow(flow, caplog, capfd, masked=True))
    finally:
        tls_server.panda.faults.clear()
    print(f"secrets scan ({source}): {found}")
    leaks = {kind: {channel: n for channel, n in channels.items() if n} for kind, channels in found.items()}
    assert not any(leaks.values()), f"secrets found (kind: channel: occurrences): {leaks}"


@pytest.mark.parametrize("source", SOURCES)
def test_the_scan_finds_secrets_when_redaction_is_off(source, panda_server, tls_server, monkeypatch, tmp_path,
                                                      caplog, capfd):
    """The negative control: the same flows with our redaction (:func:`masking.redact`, the one place
    every text goes through) made the identity and log lines not put through Airflow's masker. Every
    secret kind must be found, and each id token the server quoted in the exception texts and events:
    otherwise the scan above could pass without looking."""
    monkeypatch.setattr(masking, "redact", lambda text: text)
    monkeypatch.setattr(masking, "airflow_mask", lambda secret: None)
    flow = make_flow(source, panda_server, tls_server, tmp_path, monkeypatch)
    try:
        found = hits(flow, run_flow(flow, caplog, capfd, masked=False))
    finally:
        tls_server.panda.faults.clear()
    print(f"secrets scan, redaction off ({source}): {found}")
    missed = [kind for kind, channels in found.items() if not sum(channels.values())]
    missed += [f"{kind} in {channel}" for kind, channels in found.items() if kind in SENT
               for channel in ("exceptions", "events", "logs") if not channels[channel]]
    assert not missed, f"the scan did not find {missed}: {found}"


class QuotingIdP:
    """A PanDA server's auth config and an IdP on 127.0.0.1 whose token endpoint refuses every grant
    quoting it back (``invalid_grant: refresh token <it> is not active``), as some IdPs word it."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs

        idp = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/auth/"):
                    self._answer(200, {"client_id": "panda-atlas", "client_secret": "local-secret",
                                       "oidc_config_url": f"{idp.url}/.well-known/openid-configuration"})
                else:
                    self._answer(200, {"issuer": idp.url, "token_endpoint": f"{idp.url}/token"})

            def do_POST(self) -> None:  # noqa: N802
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self._answer(400, {"error": "invalid_grant", "error_description":
                                   f"refresh token {form['refresh_token'][0]} is not active"})

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> QuotingIdP:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("redaction", ["on", "off"])
@pytest.mark.parametrize("where", ["extra", "token_file_json"])
def test_an_idp_quoting_the_refresh_token_back(panda_server, monkeypatch, tmp_path, caplog, where, redaction):
    """The refresh token only travels to the IdP: an IdP refusing the grant may quote it back, and
    the error (sync hook, async client, trigger event) names what the IdP said without it. With
    redaction off (the negative control) the same texts hold it."""
    if redaction == "off":
        monkeypatch.setattr(masking, "redact", lambda text: text)
        monkeypatch.setattr(masking, "airflow_mask", lambda secret: None)
    expired, refresh = panda_server.token("user", lifetime=-5), panda_server.refresh_token("user")
    with QuotingIdP() as idp:
        conn: dict[str, Any] = {"conn_type": "panda", "host": idp.url, "extra": {"vo": "atlas", "max_retries": 0}}
        if where == "extra":
            conn["password"], conn["extra"]["refresh_token"] = expired, refresh
        else:
            path = tmp_path / "token.json"
            path.write_text(json.dumps({"id_token": expired, "refresh_token": refresh}))
            conn["extra"]["token_file"] = str(path)
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_IDP", json.dumps(conn))
        caplog.set_level(logging.DEBUG)
        texts = []
        with pytest.raises(PandaError) as info:
            PandaHook("panda_idp").get_task_status(1)
        texts += [str(info.value), repr(info.value)]

        async def async_flow() -> list[str]:
            client = await AsyncPandaClient.for_connection("panda_idp", LOG)
            try:
                await client.get_task_status(1)
            except PandaError as exc:
                found = [str(exc), repr(exc)]
            finally:
                await client.aclose()
            async for event in PandaTaskTrigger(1, "panda_idp", poll_interval=0.02, shared_poller=False).run():
                return [*found, json.dumps(event.payload, default=str)]
            raise AssertionError("no event")

        texts += asyncio.run(asyncio.wait_for(async_flow(), 60))
    texts += [record.getMessage() for record in caplog.records]
    assert all("invalid_grant" in text for text in texts[:5]), texts  # what the IdP said is quoted
    found = "\n".join(texts).count(refresh)
    assert (found == 0) if redaction == "on" else (found >= 5), texts


# --- the rule itself ------------------------------------------------------------------------------


def test_redaction_knows_what_was_registered_longest_first():
    masking.mask("short")  # 5 characters: registered (Airflow's masker takes 5 and more too)
    masking.mask("abcd")  # shorter: neither redacted nor masked (it would garble every text)
    masking.mask("OuterSecret-InnerSecret-0001")
    masking.mask("InnerSecret")
    masking.mask(None)
    assert masking.redact("a short abcd OuterSecret-InnerSecret-0001 InnerSecret") == "a *** abcd *** ***"


def test_a_private_key_is_registered_not_the_certificate(tmp_path):
    server = LocalPandaServer(client_certs=True)  # not started: it only signs a proxy
    try:
        text = Path(server.x509_proxy(str(tmp_path / "proxy"), "user")).read_text()
    finally:
        server.stop()
    key = text[text.index(PEM_KEY_BEGIN):]
    cert_line = text.splitlines()[3]
    masking.mask_private_keys(text.encode())
    lines = key.splitlines()[1:-1]
    assert masking.redact(key).strip() == "***"
    assert masking.redact("".join(lines)) == "***"  # the key without its line breaks
    assert all(masking.redact(f"x {line} y") == "x *** y" for line in lines if len(line) >= masking.MIN_LENGTH)
    assert masking.redact(cert_line) == cert_line  # certificates are public


def test_every_credential_of_a_token_file():
    from airflow_provider_panda.config import token_file_secrets, tokens_from_text

    assert token_file_secrets(" raw.token.value \n") == ["raw.token.value"]
    answer = json.dumps({"id_token": "the-id-token", "access_token": "the-access-token", "refresh_token":
                         "the-refresh-token", "token_type": "Bearer", "expires_in": 3600})
    assert token_file_secrets(answer) == ["the-id-token", "the-access-token", "the-refresh-token"]
    assert tokens_from_text(answer) == ("the-id-token", "the-refresh-token")
    assert tokens_from_text('{"id_token": 5}') == (None, None) and token_file_secrets('{"id_token": ') == []


def test_settings_built_any_way_register_their_credentials():
    from airflow_provider_panda.config import PandaConnectionConfig

    PandaConnectionConfig("https://p.example", auth="oidc", vo="atlas", token="direct-id-token-0x51",
                          refresh_token="direct-refresh-token-0x52")
    assert masking.known("direct-id-token-0x51") and masking.known("direct-refresh-token-0x52")


def test_answers_are_redacted_before_they_are_cut():
    """A token straddling the cut of an error text would leave a part of it unredacted."""
    from airflow_provider_panda.exceptions import PandaHTTPError, PandaNotEnvelopeError

    token = "eyJ" + "straddling-token-" * 20
    masking.mask(token)
    body = ("x" * (transport.MAX_ERROR_TEXT - 40) + f" Bearer {token}").encode()
    with pytest.raises(PandaHTTPError) as info:
        transport.parse(400, body)
    assert "straddling" not in str(info.value) and len(info.value.text) <= transport.MAX_ERROR_TEXT
    with pytest.raises(PandaNotEnvelopeError) as info:
        transport.parse(200, b"<html>" + body)
    assert "straddling" not in str(info.value)
    envelope = transport.parse(200, json.dumps({"success": False, "message": f"bad token {token}"}).encode())
    assert envelope["message"] == "bad token ***"  # what a PandaCallFailed says

def stored_for(runs) -> list[str]:
    """XComs and rendered template fields Airflow stored for these runs."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    found = []
    with create_session() as session:
        for run in runs:
            for row in session.query(XComModel).filter_by(dag_id=run.dag_id):
                found.append(json.dumps(XComModel.deserialize_value(row), default=str))
            for row in session.query(RenderedTaskInstanceFields).filter_by(dag_id=run.dag_id):
                found.append(json.dumps(row.rendered_fields, default=str))
    assert found
    return found
