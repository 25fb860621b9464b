"""Deprecated module path: import the sensor from :mod:`airflow_provider_panda.sensors`."""

import warnings

from airflow_provider_panda.sensors.status import TaskStatusSensor

warnings.warn("airflow_provider_panda.sensors.task is deprecated: import from airflow_provider_panda.sensors",
              DeprecationWarning, stacklevel=2)

__all__ = ["TaskStatusSensor"]
