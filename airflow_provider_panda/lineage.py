"""OpenLineage for PanDA tasks: the input and output datasets of a finished task and a ``panda`` run
facet (jediTaskID, status, monitor URL).

Datasets are named as the ``rucio://`` assets are: namespace ``rucio://<scope>``, name the Rucio
dataset or container name without a trailing ``/`` (so ``user.alice:user.alice.ana_hist.root/`` is
``rucio://user.alice`` / ``user.alice.ana_hist.root``). Everything OpenLineage is imported inside the
function, so nothing changes (or loads) for users without ``apache-airflow-providers-openlineage``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_panda import assets
from airflow_provider_panda.exceptions import PandaInputError

#: The run facet's key in OpenLineage events.
RUN_FACET = "panda"


def input_datasets(task_params: Mapping[str, Any]) -> list[str]:
    """The Rucio names a task reads: ``dsForIN`` and the datasets of its input templates."""
    names = [n.strip() for n in str(task_params.get("dsForIN") or "").split(",") if n.strip()]
    for item in task_params.get("jobParameters") or []:
        if isinstance(item, dict) and item.get("param_type") == "input" and isinstance(item.get("dataset"), str):
            names.extend(n.strip() for n in item["dataset"].split(",") if n.strip())
    return list(dict.fromkeys(names))


def facets_on_complete(task_id: int | None, status: str | None, monitor_url: str | None,
                       inputs: list[str], outputs: list[dict[str, Any]]) -> Any:
    """The ``OperatorLineage`` of a finished PanDA task (inputs, outputs with file counts, run facet)."""
    from airflow.providers.common.compat.openlineage.facet import (
        Dataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        RunFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    ins = []
    for did in inputs:
        try:
            namespace, name = assets.openlineage_name(did)
        except PandaInputError:
            continue  # a wildcard or otherwise not a single dataset: nothing to name
        ins.append(Dataset(namespace=namespace, name=name))
    outs = []
    for output in outputs:
        namespace, name = assets.openlineage_name(f"{output['scope']}:{output['name']}")
        stats = OutputStatisticsOutputDatasetFacet(rowCount=None, fileCount=output["n_files"])
        outs.append(OutputDataset(namespace=namespace, name=name, outputFacets={"outputStatistics": stats}))
    run_facets = {}
    if task_id is not None:
        run_facets[RUN_FACET] = RunFacet().with_additional_properties(
            jediTaskID=task_id, status=status, monitorUrl=monitor_url)
    return OperatorLineage(inputs=ins, outputs=outs, run_facets=run_facets)


def operator_lineage(operator: Any) -> Any:
    """``get_openlineage_facets_on_complete`` of the operators: what :func:`assets.publish_outputs`
    recorded after a successful wait, or an empty lineage."""
    recorded = getattr(operator, "panda_lineage", None) or {}
    return facets_on_complete(recorded.get("task_id"), recorded.get("status"), recorded.get("monitor_url"),
                              recorded.get("inputs") or [], recorded.get("outputs") or [])
