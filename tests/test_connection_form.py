"""The connection form: what Airflow's UI stores (null or "" for every field left empty) works, every
extra the hook reads has a field, and "Test" says what to change when something is wrong."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_panda import CONNECTION_FIELDS, CONNECTION_UI, get_provider_info
from airflow_provider_panda.config import config_from_connection
from airflow_provider_panda.hooks.panda import PandaHook
from airflow_provider_panda.testing.server import LocalPandaServer

EMPTY = [None, "", "  "]


class Conn:
    """The attributes of an Airflow Connection that the config reads."""

    def __init__(self, host: str, password: str | None, extra: dict[str, Any]) -> None:
        self.conn_id, self.host, self.password, self.extra_dejson = "form", host, password, extra
        self.schema = self.port = self.login = None


def form_extra(**values: Any) -> dict[str, Any]:
    """The extra JSON the UI saves: every field of the form, null unless given."""
    return {name: values.get(name) for name in CONNECTION_FIELDS}


@pytest.mark.parametrize("empty", EMPTY, ids=["null", "empty", "blank"])
@pytest.mark.parametrize("name", sorted(CONNECTION_FIELDS))
def test_an_empty_field_means_the_default(name: str, empty: Any) -> None:
    """Each extra left empty in the form (null, "" or blanks) reads like the extra not being there."""
    token = "eyJhbGciOiJIUzI1NiJ9.e30.sig"
    base = {"vo": "atlas"}
    expected = config_from_connection(Conn("https://panda.example:25443", token, base))
    if name == "vo":  # vo is required with a token: an empty vo must read as "not set", not as ""
        with pytest.raises(ValueError, match="'vo' is not set"):
            config_from_connection(Conn("https://panda.example:25443", token, {"vo": empty}))
        return
    assert config_from_connection(Conn("https://panda.example:25443", token, {**base, name: empty})) == expected


def test_the_whole_form_left_empty_but_vo_is_the_default_connection() -> None:
    """The shape the UI really stores: all fields present, all null but the VO."""
    token = "eyJhbGciOiJIUzI1NiJ9.e30.sig"
    cfg = config_from_connection(Conn("https://panda.example:25443", token, form_extra(vo="atlas")))
    assert (cfg.auth, cfg.vo, cfg.timeout, cfg.max_retries, cfg.retry_wait, cfg.verify, cfg.monitor_url) == (
        "oidc", "atlas", 60.0, 4, 1.0, True, "https://bigpanda.cern.ch")
    emptied = config_from_connection(Conn("https://panda.example:25443", token,
                                          {**{k: "" for k in CONNECTION_FIELDS}, "vo": "atlas"}))
    assert emptied == cfg


def test_form_values_as_the_ui_types_them() -> None:
    """Numbers come as numbers, the switch as a boolean, text with stray blanks is trimmed."""
    cfg = config_from_connection(Conn("https://panda.example:25443", "eyJ.e30.s", form_extra(
        vo=" atlas ", auth="oidc", timeout=5, max_retries=0, retry_wait=0.5, verify=False,
        monitor_url="https://mon.example/")))
    assert (cfg.vo, cfg.timeout, cfg.max_retries, cfg.retry_wait, cfg.verify, cfg.monitor_url) == (
        "atlas", 5.0, 0, 0.5, False, "https://mon.example")
    with pytest.raises(ValueError, match="'timeout' must be a number"):
        config_from_connection(Conn("https://panda.example:25443", "eyJ.e30.s", form_extra(vo="a", timeout="x")))


def test_every_extra_the_hook_reads_has_a_labelled_field() -> None:
    """The form and the config agree: no extra without a field, no field the hook ignores."""
    source = (Path(__file__).parents[1] / "airflow_provider_panda" / "config.py").read_text()
    read = set(re.findall(r"""extra(?:\.get\(|\[)"(\w+)\"""", source))
    # "token" is the password field under another name, for connections written as JSON
    assert read - {"token"} == set(CONNECTION_FIELDS)
    for name, field in CONNECTION_FIELDS.items():
        assert field["label"] and field.get("description"), name
        assert "null" in field["schema"]["type"], f"{name} must accept null (what the form stores)"
    assert CONNECTION_FIELDS["auth"]["schema"]["enum"] == ["oidc", "x509", "none"]
    assert CONNECTION_FIELDS["refresh_token"]["schema"]["format"] == "password"


def test_airflow_reads_the_form_from_the_provider_info() -> None:
    """Airflow's own schema accepts the provider info, and its providers manager builds the form from it:
    fields hidden and relabelled, a select for auth, the refresh token masked."""
    import airflow
    import jsonschema
    from airflow.providers_manager import ProvidersManager
    from packaging.version import Version

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)
    assert get_provider_info()["integrations"][0]["integration-name"] == "PanDA"
    if Version(airflow.__version__) < Version("3.2"):
        # 3.1 builds the form from hook methods (and only with wtforms installed): labels and hidden fields
        assert PandaHook.get_ui_field_behaviour()["hidden_fields"] == ["schema", "port", "login"]
        pytest.skip("conn-fields and ui-field-behaviour in the provider info are read from Airflow 3.2 on")
    manager = ProvidersManager()
    behaviour = manager.field_behaviours["panda"]
    assert behaviour["hidden_fields"] == CONNECTION_UI["hidden-fields"] == ["schema", "port", "login"]
    assert behaviour["relabeling"]["password"] == "OIDC id token"
    widgets = {k.removeprefix("extra__panda__"): w for k, w in manager.connection_form_widgets.items()
               if k.startswith("extra__panda__")}
    assert set(widgets) == set(CONNECTION_FIELDS)
    assert widgets["auth"].field["schema"]["enum"] == ["oidc", "x509", "none"]
    assert widgets["refresh_token"].is_sensitive and not widgets["vo"].is_sensitive


# --- "Test" in the UI --------------------------------------------------------------------------


@pytest.fixture
def as_form(monkeypatch: pytest.MonkeyPatch):
    """Install a connection as the form saves it (all extras present, null unless given)."""

    def install(host: str, password: str | None, **extra: Any) -> PandaHook:
        conn = {"conn_type": "panda", "host": host, "password": password, "extra": form_extra(**extra)}
        monkeypatch.setenv("AIRFLOW_CONN_PANDA_FORM", json.dumps(conn))
        return PandaHook("panda_form")

    return install


def test_test_connection_accepts_the_form_with_empty_fields(panda_server, as_form) -> None:
    hook = as_form(panda_server.url, panda_server.token(), vo="atlas")
    ok, message = hook.test_connection()
    assert ok, message
    assert "credentials were accepted" in message and "'atlas'" in message
    assert hook.get_tasks_modified_since("2000-01-01 00:00:00") is not None


def test_test_connection_names_an_unreachable_server(as_form) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    ok, message = as_form(url, None, max_retries=3).test_connection()
    assert not ok
    assert message.startswith(f"Cannot reach {url}") and "Check the URL" in message


def test_test_connection_explains_a_tls_failure(as_form) -> None:
    with LocalPandaServer(tls=True) as server:
        ok, message = as_form(server.url, server.token(), vo="atlas").test_connection()
        assert not ok and message.startswith(f"TLS with {server.url} failed") and "CA directory" in message
        ok, message = as_form(server.url, server.token(), vo="atlas", ca_path=server.tls[0]).test_connection()
        assert ok, message


def test_test_connection_names_the_refused_vo(panda_server, as_form) -> None:
    token = panda_server.token()
    ok, message = as_form(panda_server.url, token, vo="cms").test_connection()
    assert not ok
    assert "refused the token for VO 'cms'" in message and "Unknown vo" in message
    assert token not in message


def test_test_connection_says_the_token_expired(panda_server, as_form) -> None:
    token = panda_server.token(lifetime=-120)
    ok, message = as_form(panda_server.url, token, vo="atlas").test_connection()
    assert not ok
    assert message.startswith("The id token expired at ") and "Refresh token" in message
    assert token not in message
    # with a refresh token the hook renews it, so the test passes
    refreshed = as_form(panda_server.url, token, vo="atlas", refresh_token=panda_server.refresh_token())
    ok, message = refreshed.test_connection()
    assert ok, message


def test_test_connection_without_credentials_says_what_works(panda_server, as_form) -> None:
    ok, message = as_form(panda_server.url, None).test_connection()
    assert ok and "no credentials" in message


def test_test_connection_reports_a_bad_setting_before_any_request(as_form) -> None:
    ok, message = as_form("https://panda.example:25443", "eyJ.e30.s", vo="atlas", timeout="soon").test_connection()
    assert not ok and message.startswith("The connection cannot be used as it is") and "'timeout'" in message
