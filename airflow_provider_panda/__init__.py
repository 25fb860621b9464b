"""Apache Airflow provider for PanDA (the ATLAS/Rubin workload management system)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_TEXT = {"type": ["string", "null"]}

#: Labels, hidden standard fields and placeholders of the connection form (``ui-field-behaviour``).
CONNECTION_UI: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "PanDA server URL", "password": "OIDC id token"},
    "placeholders": {
        "host": "https://pandaserver.cern.ch:25443",
        "password": "eyJ... (or leave empty and set Token file, or X509 proxy)",
        "vo": "atlas",
        "token_file": "/path/to/id_token (or the IdP's JSON token response)",
        "x509_proxy": "/tmp/x509up_u1000",
        "ca_path": "/etc/grid-security/certificates",
        "cache_url": "https://pandacache.cern.ch",
        "monitor_url": "https://bigpanda.cern.ch",
    },
}

#: The extra fields of the connection form (``conn-fields``): one per extra the hook reads, except
#: ``token``, which is the password field under another name for JSON connections. A field left
#: empty is stored as null (or "") and means "the default".
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "vo": {
        "label": "VO",
        "description": "Sent as Origin: atlas, or atlas:production for the production role. Needed with a token.",
        "schema": _TEXT,
    },
    "auth": {
        "label": "Authentication",
        "description": "Empty: oidc with a token or token file, x509 with a proxy, else none (only hello works).",
        "schema": {"type": ["string", "null"], "enum": ["oidc", "x509", "none"]},
    },
    "token_file": {
        "label": "Token file",
        "description": "A file holding the id token (or the IdP's JSON token response), read on every request.",
        "schema": _TEXT,
    },
    "refresh_token": {
        "label": "Refresh token",
        "description": "An OIDC refresh token: the id token is refreshed when it expires within minutes.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "x509_proxy": {"label": "X509 proxy file", "description": "Grid proxy (certificate and key).", "schema": _TEXT},
    "ca_path": {
        "label": "CA directory or file",
        "description": "Trusted CAs for the server's certificate (empty: the system's).",
        "schema": _TEXT,
    },
    "verify": {
        "label": "Verify TLS certificates",
        "description": "Turn off only for a test server: the token would go to whoever answers.",
        "schema": {"type": ["boolean", "null"], "default": True},
    },
    "cache_url": {
        "label": "Cache server URL",
        "description": "Where files are uploaded (empty: the PanDA server).",
        "schema": _TEXT,
    },
    "monitor_url": {
        "label": "Monitor URL",
        "description": "The monitor behind the task links (empty: https://bigpanda.cern.ch).",
        "schema": _TEXT,
    },
    "timeout": {
        "label": "Timeout (s)",
        "description": "Seconds per request (empty: 60).",
        "schema": {"type": ["number", "null"], "minimum": 0.1, "maximum": 3600},
    },
    "max_retries": {
        "label": "Max retries",
        "description": "Retries of transient faults: no answer, 5xx, 429 (empty: 4).",
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    },
    "retry_wait": {
        "label": "Retry wait (s)",
        "description": "First backoff before a retry, doubled each time, with jitter (empty: 1).",
        "schema": {"type": ["number", "null"], "minimum": 0, "maximum": 300},
    },
}


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` and the UI learn about this provider."""
    return {
        "package-name": "airflow-provider-panda",
        "name": "PanDA",
        "description": "Submit, wait on, retry, kill and recover PanDA tasks from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "PanDA",
                "external-doc-url": "https://panda-wms.readthedocs.io/",
                "tags": ["service"],
            }
        ],
        "connection-types": [
            {
                "connection-type": "panda",
                "hook-class-name": "airflow_provider_panda.hooks.panda.PandaHook",
                "hook-name": "PanDA",
                "ui-field-behaviour": CONNECTION_UI,
                "conn-fields": CONNECTION_FIELDS,
            }
        ],
        "hooks": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.hooks.panda"]}
        ],
        "operators": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.operators.submit",
                                                              "airflow_provider_panda.operators.commands"]}
        ],
        "sensors": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.sensors.status"]}
        ],
        "triggers": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.triggers.wait"]}
        ],
        "extra-links": ["airflow_provider_panda.links.PandaTaskLink"],
        # the PanDA view (task instance and DAG run tabs) and the connection test fix; also an
        # ``airflow.plugins`` entry point, which Airflow loads even when it discovers providers lazily
        "plugins": [{"name": "panda", "plugin-class": "airflow_provider_panda.ui.plugin.PandaPlugin"}],
        "asset-uris": [
            {
                "schemes": ["rucio"],
                "handler": "airflow_provider_panda.assets.sanitize_uri",
                "factory": "airflow_provider_panda.assets.create_asset",
                "to_openlineage_converter": "airflow_provider_panda.assets.convert_asset_to_openlineage",
            }
        ],
        "task-decorators": [
            {"name": "panda", "class-name": "airflow_provider_panda.decorators.panda.panda_task"}
        ],
    }
