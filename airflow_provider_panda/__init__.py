"""Apache Airflow provider for PanDA (the ATLAS/Rubin workload management system)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

CONNECTION_UI: dict[str, Any] = {
    "hidden_fields": ["schema", "port", "login"],
    "relabeling": {"host": "PanDA server URL", "password": "OIDC id token"},
    "placeholders": {
        "host": "https://pandaserver.cern.ch:25443",
        "password": "eyJ... (or leave empty and set extra token_file / x509_proxy)",
        "extra": '{"vo": "atlas", "auth": "oidc", "token_file": "", "x509_proxy": "", "ca_path": "", '
        '"cache_url": "https://pandacache.cern.ch", "monitor_url": "https://bigpanda.cern.ch", "timeout": 60}',
    },
}


def get_provider_info() -> dict[str, Any]:
    """What ``airflow providers list`` and the UI learn about this provider."""
    return {
        "package-name": "airflow-provider-panda",
        "name": "PanDA",
        "description": "Submit, wait on, retry, kill and recover PanDA tasks from Airflow.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "panda",
                "hook-class-name": "airflow_provider_panda.hooks.panda.PandaHook",
                "hook-name": "PanDA",
                "ui-field-behaviour": CONNECTION_UI,
                "conn-fields": {
                    "vo": {"label": "VO (sent as Origin)", "schema": {"type": ["string", "null"]}},
                    "auth": {"label": "Auth: oidc | x509 | none", "schema": {"type": ["string", "null"]}},
                    "token_file": {"label": "Token file (read on every request)",
                                   "schema": {"type": ["string", "null"]}},
                    "x509_proxy": {"label": "X509 proxy file", "schema": {"type": ["string", "null"]}},
                    "ca_path": {"label": "CA directory or file", "schema": {"type": ["string", "null"]}},
                    "cache_url": {"label": "Cache server URL", "schema": {"type": ["string", "null"]}},
                    "monitor_url": {"label": "Monitor URL", "schema": {"type": ["string", "null"]}},
                    "timeout": {"label": "Timeout (s)", "schema": {"type": ["number", "null"]}},
                },
            }
        ],
        "hooks": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.hooks.panda"]}
        ],
        "operators": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.operators.task"]}
        ],
        "sensors": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.sensors.task"]}
        ],
        "triggers": [
            {"integration-name": "PanDA", "python-modules": ["airflow_provider_panda.triggers.task"]}
        ],
        "extra-links": ["airflow_provider_panda.links.PandaTaskLink"],
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
