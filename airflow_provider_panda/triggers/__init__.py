"""The PanDA trigger: ``PandaTaskTrigger`` (wait.py), and the triggerer's shared poller (poller.py)."""

from airflow_provider_panda.triggers.wait import PandaTaskTrigger

__all__ = ["PandaTaskTrigger"]
