"""Describe a PanDA task the way users do with ``prun``: a typed builder that makes prun's task parameter map.

``PrunTask(exec=..., out_ds=..., in_ds=..., outputs=[...], n_jobs=...)`` holds what a user gives prun on
the command line; :meth:`PrunTask.to_params` returns the map ``prun`` (panda-client 2.2.0) builds for
the same options, checked before anything is sent, and refused only where prun refuses or PanDA would
reject the task: names follow PanDA's and Rucio's rules, counts are positive. A sandbox directory is packed
into a tarball and uploaded with :meth:`PandaHook.put_file` (an identical one already on the server is
reused), as prun does with the working directory.

Importing this module is cheap (no hook, no HTTP library): the operator converts a builder at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_panda.builder.prun import (
    DEFAULT_SOURCE_URL,
    EXEC_PLACEHOLDERS,
    PRUN_VERSION,
    PrunTask,
    SecondaryInput,
    as_task,
)
from airflow_provider_panda.builder.sandbox import pack_sandbox, upload_sandbox

if TYPE_CHECKING:
    from airflow_provider_panda.hooks.panda import PandaHook

__all__ = ["DEFAULT_SOURCE_URL", "EXEC_PLACEHOLDERS", "PRUN_VERSION", "PrunTask", "SecondaryInput", "as_task",
           "build_task_params", "pack_sandbox", "upload_sandbox"]


def build_task_params(task: PrunTask | Mapping[str, Any], hook: PandaHook) -> dict[str, Any]:
    """The map to submit for a builder (or its rendered dict): checked, sandbox uploaded, URLs from the connection."""
    builder = PrunTask.from_rendered(task)
    builder.check()
    name = upload_sandbox(hook, builder)  # packing checks the directory before the upload
    config = hook.config
    base = config.upload_base_url if builder.vo is None else config.base_url
    return builder.to_params(source_url=base, sandbox_name=name)
