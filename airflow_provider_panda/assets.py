"""PanDA's output datasets as data: Rucio dataset names, the ``rucio://`` asset URI scheme, the
summary of a finished task's outputs, and the asset events that announce them.

A dataset is a Rucio DID ``<scope>:<name>``; its asset URI is ``rucio://<scope>/<name>`` (a
container's trailing ``/`` dropped, as Airflow drops trailing slashes of every URI). Airflow is
imported only inside the functions that make assets, so the local server and DAG parsing stay cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

from airflow_provider_panda import api, xcom
from airflow_provider_panda.exceptions import PandaInputError

if TYPE_CHECKING:
    from airflow.sdk import Asset

SCHEME = "rucio"
#: Rucio's limits (ATLAS schema): scopes up to 30 characters, names up to 255.
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,29}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,254}")
#: How many file names of one dataset go into XCom and asset extras; the counts are always whole.
MAX_LISTED_FILES = 100


def dataset_scope(name: str) -> str:
    """The Rucio scope of a dataset name as ATLAS derives it: ``scope:name`` gives ``scope``;
    ``user.<nick>.*`` and ``group.<name>.*`` give ``user.<nick>`` and ``group.<name>``; else the first
    dot-separated part (``data18_13TeV``)."""
    if ":" in name:
        return name.split(":", 1)[0]
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] in ("user", "group") and len(parts) > 2 else parts[0]


def split_did(did: str, scope: str | None = None) -> tuple[str, str]:
    """``(scope, name)`` of a dataset or container (``scope:name`` or a bare name), checked against
    Rucio's rules; a container's trailing ``/`` is dropped. Raises :class:`PandaInputError`."""
    if not isinstance(did, str) or not did.strip():
        raise PandaInputError("a dataset name must be a non-empty string")
    text = did.strip()
    if ":" in text:
        scope_part, text = text.split(":", 1)
        if scope is not None and scope != scope_part:
            raise PandaInputError(f"dataset {did!r:.140} names scope {scope_part!r}, not {scope!r}")
        scope = scope_part
    name = text[:-1] if text.endswith("/") else text
    scope = dataset_scope(name) if scope is None else scope
    if not scope.isascii() or not _SCOPE.fullmatch(scope):
        raise PandaInputError(f"malformed Rucio scope {scope!r:.60}: letters, digits, '.', '_', '-', at most 30")
    if not name.isascii() or not _NAME.fullmatch(name):
        raise PandaInputError(f"malformed Rucio dataset name {name!r:.300}: letters, digits, '.', '_', '-', "
                              "at most 255, no '/' inside")
    return scope, name


def dataset_uri(did: str, scope: str | None = None) -> str:
    """The asset URI of a dataset or container: ``rucio://<scope>/<name>``."""
    scope, name = split_did(did, scope)
    return f"{SCHEME}://{scope}/{name}"


def did_from_uri(uri: str) -> str:
    """``scope:name`` (Rucio's notation, what ``in_ds`` takes) of a ``rucio://`` asset URI."""
    from urllib.parse import urlsplit

    parts = sanitize_uri(urlsplit(uri))
    return f"{parts.netloc}:{parts.path.lstrip('/')}"


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """The ``rucio`` scheme's normaliser (``asset-uris`` handler): ``rucio://<scope>/<name>`` with a
    valid scope and one valid name; anything else is refused with ``ValueError``."""
    if uri.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URI: {uri.scheme!r}")
    if uri.username or uri.password or uri.port is not None or uri.query or uri.fragment:
        raise ValueError(f"{SCHEME}:// URIs take no user, port, query or fragment")
    name = uri.path[1:] if uri.path.startswith("/") else uri.path
    name = name[:-1] if name.endswith("/") else name
    try:
        scope, name = split_did(name, uri.netloc or None)
    except PandaInputError as exc:
        raise ValueError(str(exc)) from None
    if not uri.netloc:
        raise ValueError(f"{SCHEME}:// URIs name the scope as the host: {SCHEME}://<scope>/<name>")
    return uri._replace(netloc=scope, path=f"/{name}")


def create_asset(*, did: str, scope: str | None = None, extra: dict[str, Any] | None = None) -> Asset:
    """An Airflow asset for a Rucio dataset or container (the scheme's ``factory``)."""
    from airflow.sdk import Asset

    return Asset(uri=dataset_uri(did, scope), extra=extra or {})


def convert_asset_to_openlineage(asset: Any, lineage_context: Any = None) -> Any:
    """The OpenLineage dataset of a ``rucio://`` asset: namespace ``rucio://<scope>``, name the dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    namespace, name = openlineage_name(did_from_uri(asset.uri))
    return Dataset(namespace=namespace, name=name)


def openlineage_name(did: str) -> tuple[str, str]:
    """OpenLineage ``(namespace, name)`` of a dataset: ``("rucio://<scope>", "<name>")``."""
    scope, name = split_did(did)
    return f"{SCHEME}://{scope}", name


# --- what a task produced ----------------------------------------------------------------------


def containers_of(task_params: Mapping[str, Any]) -> dict[str, str]:
    """Dataset name -> container name, from the task's templates (``jobParameters`` and ``log``)."""
    items = [i for i in task_params.get("jobParameters") or [] if isinstance(i, dict)]
    if isinstance(task_params.get("log"), dict):
        items.append(task_params["log"])
    return {i["dataset"]: str(i.get("container") or i["dataset"])
            for i in items if i.get("type") == "template" and isinstance(i.get("dataset"), str)}


def container_of(dataset: str, containers: Mapping[str, str]) -> str:
    """The container a dataset belongs to: JEDI names the dataset it makes for a container template
    ``X/`` as ``X.<id>...``, so the longest container whose name prefixes it; else the dataset itself."""
    if dataset in containers:
        return containers[dataset]
    found = [c for c in containers.values() if dataset.startswith(c.rstrip("/") + ".")]
    return max(found, key=len) if found else dataset


def summarize(task_id: int, listings: Mapping[str, list[dict[str, Any]]],
              containers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The XCom ``output_datasets``: one entry per dataset of each type in ``listings`` (the
    ``task/get_datasets_and_files`` answers by type), with its container (``name``), JEDI's dataset,
    scope, ``did`` (``scope:container``, what ``in_ds`` takes), asset URI and file
    counts (``n_files`` finished files, ``n_files_failed``, ``n_files_total``) and up to
    :data:`MAX_LISTED_FILES` file names."""
    out = []
    for kind, answer in listings.items():
        for entry in answer:
            dataset = entry.get("dataset") or {}
            name = str(dataset.get("name") or "")
            if not name:
                continue
            container = container_of(name, containers)
            files = [f for f in entry.get("files") or [] if isinstance(f, dict)]
            good = [f for f in files if f.get("status") == "finished"]
            scope = next((str(f["scope"]) for f in files if f.get("scope")), None) or dataset_scope(container)
            out.append({
                "name": container, "dataset": name, "dataset_id": dataset.get("id"), "type": kind,
                "scope": scope, "did": f"{scope}:{container}", "uri": dataset_uri(container, scope),
                "jediTaskID": task_id,
                "n_files": len(good), "n_files_failed": sum(f.get("status") in ("failed", "lost") for f in files),
                "n_files_total": len(files),
                "files": [str(f.get("lfn")) for f in good[:MAX_LISTED_FILES]],
                "files_truncated": len(good) > MAX_LISTED_FILES,
            })
    return out


def read_outputs(hook: Any, task_id: int, types: Iterable[str] = api.OUTPUT_DATASET_TYPES,
                 task_params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Read a task's output and log datasets with their files (one ``get_datasets_and_files`` per type,
    so each dataset's type is known) and name their containers from the task parameters."""
    listings = {kind: hook.get_datasets_and_files(task_id, [kind]) for kind in types}
    return summarize(task_id, listings, containers_of(task_params if task_params is not None
                                                      else _params_or_empty(hook, task_id)))


def _params_or_empty(hook: Any, task_id: int) -> Mapping[str, Any]:
    try:
        return hook.get_task_params(task_id)
    except Exception:  # noqa: BLE001 - container and input names are a nicety; the dataset names suffice
        return {}


def event_extra(output: Mapping[str, Any], status: str, monitor_url: str) -> dict[str, Any]:
    """The extra of the asset event announcing one produced dataset."""
    return {
        "jediTaskID": output["jediTaskID"], "status": status, "partial": status != "done",
        "dataset": output["dataset"], "container": output["name"], "scope": output["scope"],
        "n_files": output["n_files"], "n_files_failed": output["n_files_failed"],
        "monitor_url": monitor_url,
    }


def emit_events(context: Mapping[str, Any], outlets: Iterable[Any], outputs: list[dict[str, Any]],
                status: str, monitor_url: str) -> list[str]:
    """Announce the produced output datasets through the task's outlets: every ``AssetAlias`` outlet
    gets one event per output dataset; a ``rucio://`` ``Asset`` outlet that names a produced dataset
    gets its extra. Returns the URIs announced."""
    from airflow.sdk import Asset, AssetAlias

    outlet_events = context.get("outlet_events")
    produced = [o for o in outputs if o["type"] == "output"]
    if outlet_events is None or not produced:
        return []
    announced: list[str] = []
    for outlet in outlets or ():
        if isinstance(outlet, AssetAlias):
            for output in produced:
                outlet_events[outlet].add(Asset(uri=output["uri"]), extra=event_extra(output, status, monitor_url))
                announced.append(output["uri"])
        elif isinstance(outlet, Asset):
            for output in produced:
                if outlet.uri == output["uri"]:
                    outlet_events[outlet].extra.update(event_extra(output, status, monitor_url))
                    announced.append(output["uri"])
    return announced


def datasets_from_events(events: Any) -> list[str]:
    """``scope:name`` of every ``rucio://`` dataset in a DAG run's ``triggering_asset_events``, oldest
    first: what a consumer DAG passes as ``in_ds``."""
    found: list[str] = []
    for event_list in (events or {}).values():
        for event in event_list:
            uri = getattr(getattr(event, "asset", None), "uri", "") or ""
            if uri.startswith(f"{SCHEME}://"):
                did = did_from_uri(uri)
                container = (getattr(event, "extra", None) or {}).get("container")
                if isinstance(container, str) and container.rstrip("/") == did.split(":", 1)[1]:
                    did = f"{did.split(':', 1)[0]}:{container}"  # the container, as prun names it
                if did not in found:
                    found.append(did)
    return found


def _wants_events(outlets: Iterable[Any]) -> bool:
    from airflow.sdk import Asset, AssetAlias

    return any(isinstance(o, AssetAlias) or (isinstance(o, Asset) and o.uri.startswith(f"{SCHEME}://"))
               for o in outlets or ())


def publish_outputs(operator: Any, context: Mapping[str, Any], task_id: int,
                    status: str | None) -> list[dict[str, Any]]:
    """After a successful wait: read what the task produced, push it as the XCom ``output_datasets``
    and announce the output datasets through the operator's outlets (asset events with extras).

    A failed read is a warning for an operator without ``rucio://`` or alias outlets (the task did
    succeed); with them it raises, since a downstream DAG would otherwise silently never run."""
    hook = operator.hook
    outlets = getattr(operator, "outlets", None) or []
    try:
        params = _params_or_empty(hook, task_id)
        outputs = read_outputs(hook, task_id, task_params=params)
    except Exception as exc:
        if _wants_events(outlets):
            raise
        operator.log.warning("Could not read the outputs of PanDA task %s: %s", task_id, exc)
        return []
    from airflow_provider_panda.lineage import input_datasets

    # kept on the operator for get_openlineage_facets_on_complete (lineage.py); Airflow 3.1's context
    # holds the operator as it was before prepare_for_execution() copied it, and OpenLineage asks that one
    recorded = {"task_id": task_id, "status": status, "monitor_url": hook.monitor_url(task_id),
                "inputs": input_datasets(params), "outputs": outputs}
    for holder in {id(o): o for o in (operator, context.get("task")) if o is not None}.values():
        holder.panda_lineage = recorded
    context["ti"].xcom_push(key=xcom.OUTPUT_DATASETS, value=outputs)
    for output in outputs:
        operator.log.info("PanDA task %s produced %s %s (%s): %d files, %d failed", task_id, output["type"],
                          output["name"], output["uri"], output["n_files"], output["n_files_failed"])
    announced = emit_events(context, outlets, outputs, str(status), hook.monitor_url(task_id))
    if announced:
        operator.log.info("Asset events for %s", ", ".join(announced))
    return outputs


def output_dids_of(ti: Any, task_id: str) -> str:
    """Comma-joined ``scope:container`` of the output datasets (not the log) an upstream PanDA task
    pushed as ``output_datasets``, what ``in_ds`` takes: the Jinja filter ``panda_outputs``
    (``{{ ti | panda_outputs('generate') }}``), in every PanDA operator's templates. A mapped upstream
    gives all its map indexes' outputs, in map-index order, each dataset once."""
    if not isinstance(task_id, str) or not task_id.strip():
        raise PandaInputError(f"panda_outputs takes the task_id of an upstream PanDA task, e.g. "
                              f"{{{{ ti | panda_outputs('generate') }}}}, got {task_id!r:.60}")
    # task_ids as a list: always one value per map index (Airflow orders them by map index), so an
    # unmapped upstream ([outputs]) and a mapped one ([outputs of 0, outputs of 1, ...]) read alike
    pulled = ti.xcom_pull(task_ids=[task_id], key=xcom.OUTPUT_DATASETS)
    pushed = [outputs for outputs in pulled or [] if outputs is not None]
    if not pushed:
        raise PandaInputError(f"panda_outputs({task_id!r}): no task {task_id!r} of this DAG run pushed "
                              f"{xcom.OUTPUT_DATASETS!r} (a SubmitTaskOperator or @task.panda task pushes it when its "
                              "PanDA task succeeded and its outputs could be read): check the task_id, and that "
                              "this task runs after it")
    dids: dict[str, None] = {}  # a dict keeps the first occurrence's order
    for outputs in pushed:
        for output in outputs if isinstance(outputs, list) else []:
            if isinstance(output, Mapping) and output.get("type") == "output" and isinstance(output.get("did"), str):
                dids.setdefault(output["did"], None)
    return ",".join(dids)


def add_template_filters(env: Any) -> Any:
    """Register the provider's Jinja filters on an environment (our operators' templates have them)."""
    env.filters.setdefault("panda_outputs", output_dids_of)
    return env
