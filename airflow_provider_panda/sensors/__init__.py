"""The PanDA sensor: ``TaskStatusSensor`` (status.py)."""

from airflow_provider_panda.sensors.status import TaskStatusSensor

__all__ = ["TaskStatusSensor"]
