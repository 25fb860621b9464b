"""Deprecated module path (triggers deferred before the rename are stored under it): the trigger
lives in :mod:`airflow_provider_panda.triggers.wait`."""

from airflow_provider_panda.triggers.wait import PandaTaskTrigger, event_error, event_hold

__all__ = ["PandaTaskTrigger", "event_error", "event_hold"]
