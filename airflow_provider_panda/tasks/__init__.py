"""Deprecated package path: the task builder is :mod:`airflow_provider_panda.builder`."""

import sys
import warnings

from airflow_provider_panda import builder
from airflow_provider_panda.builder import *  # noqa: F403
from airflow_provider_panda.builder import (
              __all__,  # noqa: F401
              prun,
              sandbox,
)

warnings.warn("airflow_provider_panda.tasks is deprecated: import from airflow_provider_panda.builder",
              DeprecationWarning, stacklevel=2)

sys.modules[f"{__name__}.prun"] = prun
sys.modules[f"{__name__}.sandbox"] = sandbox
del builder
