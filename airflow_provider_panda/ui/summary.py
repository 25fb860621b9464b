"""What the PanDA view shows of one PanDA task, from task-level reads only. Pure: no I/O, no Airflow.

:func:`read_task` makes the reads (through a hook given to it) and :func:`snapshot` keeps, of their
answers, only what the view shows: status, file progress, jobs by status (``task/get_details``'
``statistics``), the commonest errors of the failed jobs with their sites, the output containers.
Never the raw answers: a snapshot holds no task parameters, no job list, nothing of the connection.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from airflow_provider_panda import api

#: Failed jobs are read (``task/get_job_descriptions``, failed ones only) only for tasks of at most
#: this many input files: the view never asks for the jobs of a 100,000-job task. Larger tasks show
#: PanDA's own ``errorDialog`` and the attempts' diagnoses, and point to the monitor.
JOB_READ_LIMIT = 1000
#: How many error kinds the view lists.
TOP_ERRORS = 5
#: The task-level fields a snapshot keeps from ``task/get_detailed_info``.
INFO_FIELDS = ("jediTaskID", "taskName", "status", "attemptNr", "errorDialog", "nFiles", "nFilesFinished",
               "nFilesFailed", "pctFinished", "pctFailed", "stateChangeTime", "creationDate", "userName")
#: Job statuses in the order a person reads them, the good end first.
JOB_STATUS_ORDER = ("finished", "running", "transferring", "merging", "holding", "starting", "sent",
                    "activated", "assigned", "defined", "pending", "picked", "tobedone", "failed",
                    "closed", "cancelled")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return value


def job_error(job: Mapping[str, Any]) -> str:
    """One failed job's error as a person reads it: the cause's label (diagnosis.py's tables) and the
    diagnostic text the job carries."""
    from airflow_provider_panda.diagnosis import job_cause
    from airflow_provider_panda.waiting import ERROR_FIELDS

    cause = job_cause(job)
    diag = next((str(job.get(d)) for c, d in ERROR_FIELDS if job.get(c) and job.get(d)), "")
    text = cause.label
    if diag and diag.lower() not in text.lower():
        text = f"{text}: {diag}"
    return text[:240]


def commonest_errors(jobs: Iterable[Mapping[str, Any] | None], limit: int = TOP_ERRORS) -> list[dict[str, Any]]:
    """The failed jobs' errors, commonest first, each with its count and the sites where it happened
    (commonest first): ``[{"error", "count", "sites": [[site, n], ...]}]``."""
    counts: Counter[str] = Counter()
    sites: dict[str, Counter[str]] = defaultdict(Counter)
    for job in jobs:
        if not job or job.get("jobStatus") not in api.JOB_FAILED:
            continue
        text = job_error(job)
        counts[text] += 1
        sites[text][str(job.get("computingSite") or "unknown site")] += 1
    return [{"error": text, "count": n, "sites": [[s, k] for s, k in sites[text].most_common(5)]}
            for text, n in counts.most_common(limit)]


def jobs_by_status(statistics: Any) -> list[list[Any]]:
    """``statistics`` of ``task/get_details`` as ``[[status, files], ...]`` in reading order."""
    counts = api.parse_statistics(statistics)
    known = [s for s in JOB_STATUS_ORDER if s in counts]
    return [[s, counts[s]] for s in (*known, *sorted(set(counts) - set(known)))]


def snapshot(info: Mapping[str, Any] | None, details: Mapping[str, Any] | None,
             failed_jobs: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    """What the view keeps of one read of a task (JSON-ready)."""
    info = info or {}
    out: dict[str, Any] = {k: _plain(info.get(k)) for k in INFO_FIELDS}
    n_files = info.get("nFiles") or 0
    finished, failed = info.get("nFilesFinished") or 0, info.get("nFilesFailed") or 0
    out["progress"] = {"files": n_files, "finished": finished, "failed": failed,
                       "pct_finished": round(100 * finished / n_files) if n_files else 0,
                       "pct_failed": round(100 * failed / n_files) if n_files else 0}
    out["jobs"] = jobs_by_status((details or {}).get("statistics"))
    out["outputs"] = [d for d in str((details or {}).get("outDS") or "").split(",") if d]
    out["errors"] = commonest_errors(failed_jobs) if failed_jobs is not None else None
    out["failed_jobs_read"] = None if failed_jobs is None else len(failed_jobs)
    return out


def read_task(hook: Any, task_id: int, job_read_limit: int = JOB_READ_LIMIT) -> dict[str, Any]:
    """One read of a task through ``hook``: ``task/get_detailed_info``, ``task/get_details``, and,
    for a task of at most ``job_read_limit`` input files, its failed jobs
    (``task/get_job_descriptions`` with ``unsuccessful_only``). Each call once, no retry: the
    view reads again after its cache's TTL."""
    from airflow_provider_panda import calls

    def once(call: Any) -> Any:
        return call.interpret(hook._send(call))

    info = once(calls.get_task_info(task_id))
    details = once(calls.get_task_details(task_id))
    jobs = None
    if (info.get("nFiles") or 0) <= job_read_limit:
        jobs = once(calls.get_job_descriptions(task_id, unsuccessful_only=True))
    return snapshot(info, details, jobs)
