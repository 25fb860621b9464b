"""``@task.panda``: a TaskFlow function that describes a PanDA task; the task is submitted and waited on.

The function returns a :class:`~airflow_provider_panda.builder.PrunTask` (or a dict of its fields, or a
raw task parameter map with a ``taskName``); the decorator runs it as :class:`SubmitTaskOperator` does,
with the same guarantees: checks before any request, the sandbox uploaded, one PanDA task per run
across Airflow retries, deferrable waits, automatic PanDA retries. Its arguments are the operator's::

    @task.panda(deferrable=True, poll_interval=60, auto_retries=2)
    def simulate(seed: int, dag_run=None) -> PrunTask:
        return PrunTask(exec=f"gen.sh --seed {seed}", out_ds=f"user.alice.gen.{dag_run.run_after:%Y%m%dT%H%M%S}",
                        n_jobs=10)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_provider_panda.compat import SET_DURING_EXECUTION, context_merge, determine_kwargs
from airflow_provider_panda.exceptions import PandaInputError
from airflow_provider_panda.operators.base import DEFAULT_MAP_INDEX_TEMPLATE
from airflow_provider_panda.operators.submit import SubmitTaskOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.decorator import TaskDecorator


class _PandaDecoratedOperator(DecoratedOperator, SubmitTaskOperator):
    """Runs the function for the task description, then submits and waits as SubmitTaskOperator."""

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, "panda_task", "retry_new_params",
                                      "parent_task_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers, **SubmitTaskOperator.template_fields_renderers}
    custom_operator_name: str = "@task.panda"
    overwrite_rtif_after_execution: bool = True  # the UI shows the description the function returned

    def __init__(self, *, python_callable: Callable, op_args: Collection[Any] | None = None,
                 op_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        if {"panda_task", "task", "task_params"} & set(kwargs):
            raise PandaInputError("@task.panda takes the task from the function's return value, "
                                  "not from panda_task= or task_params=")
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs,
                         task_params="{}", **kwargs)
        self.task_params = None
        self.panda_task = SET_DURING_EXECUTION

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        described = self.python_callable(*self.op_args, **kwargs)
        if isinstance(described, Mapping) and "taskName" in described:
            self.panda_task, self.task_params = None, dict(described)  # a raw task parameter map
        else:
            from airflow_provider_panda.builder import as_task

            self.panda_task = as_task(described)
        self.render_template_fields(context)
        return super().execute(context)


def panda_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function returning a PrunTask (or its dict) into a PanDA submit-and-wait task."""
    # A decorated task's .expand() takes its mapped operator's arguments from these kwargs only (not
    # from the operator's signature), so the map index's default label is given here.
    kwargs.setdefault("map_index_template", DEFAULT_MAP_INDEX_TEMPLATE)
    return task_decorator_factory(python_callable=python_callable,
                                  decorated_operator_class=_PandaDecoratedOperator, **kwargs)
