"""A stand-in pilot: the real ``pilot/acquire_jobs`` and ``pilot/update_job`` calls, so tests can end a
task's jobs as finished or failed on the real server (jobs only finish when a pilot reports them)."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Any

import requests

from airflow_provider_panda import api

#: The pilot's own calls (production or pilot role): only this stand-in pilot makes them.
PILOT_ACQUIRE_JOBS = api.Endpoint("pilot/acquire_jobs", "POST", production=True)
PILOT_UPDATE_JOB = api.Endpoint("pilot/update_job", "POST", production=True)


class StandInPilot:
    """Acts with the production role (it runs other users' jobs, as a real pilot's identity does)."""

    def __init__(self, url: str, token: str, site: str = "TEST_SITE") -> None:
        self.url = url.rstrip("/")
        self.site = site
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Origin": "atlas:production",
                                     "Accept": "application/json", "Content-Type": "application/json"})

    def _post(self, endpoint: api.Endpoint, payload: dict[str, Any]) -> dict[str, Any]:
        answer = self.session.post(self.url + endpoint.path, data=json.dumps(payload), timeout=60)
        answer.raise_for_status()
        return answer.json()

    def acquire(self, task_id: int, n_jobs: int = 50) -> list[dict[str, Any]]:
        """Take the task's activated jobs (none while JEDI has not activated them yet)."""
        envelope = self._post(PILOT_ACQUIRE_JOBS, {"site_name": self.site, "prod_source_label": "user",
                                                       "n_jobs": n_jobs, "node": "stand-in-pilot", "task_id": task_id})
        data = envelope.get("data") or {}
        return list(data.get("jobs", [])) if envelope.get("success") else []

    def report(self, job: dict[str, Any], succeed: bool) -> None:
        """starting -> running -> finished (or failed with a pilot error), like a real pilot's updates."""
        now = datetime.now(timezone.utc).strftime(api.TIME_FORMAT)
        base = {"job_id": job["PandaID"], "site_name": self.site, "node": "stand-in-pilot"}
        for status in ("starting", "running"):
            self._post(PILOT_UPDATE_JOB, {**base, "job_status": status})
        log_file = job["logFile"]
        report = {log_file: {"guid": job["logGUID"], "fsize": 1024, "adler32": f"{zlib.adler32(log_file.encode()):08x}",
                             "surl": f"file:///tmp/stand-in-pilot/{log_file}"}}
        if succeed:  # the job's output files too, so the server registers them (as a real pilot reports them)
            for name in str(job.get("outFiles") or "").split(","):
                if name and name != log_file:
                    report[name] = {"guid": str(uuid.uuid4()), "fsize": 1024, "surl": f"file:///tmp/stand-in-pilot/{name}",
                                    "adler32": f"{zlib.adler32(name.encode()):08x}"}
        final = {**base, "job_status": "finished" if succeed else "failed", "start_time": now, "end_time": now,
                 "cpu_consumption_time": 1, "n_events": 5, "attempt_nr": job.get("attemptNr", 1),
                 "job_output_report": json.dumps(report), "trans_exit_code": 0 if succeed else 1}
        if not succeed:
            final.update({"pilot_error_code": 1099, "pilot_error_diag": "stand-in pilot: failure on request"})
        answer = self._post(PILOT_UPDATE_JOB, final)
        if not answer.get("success"):
            raise RuntimeError(f"update_job refused: {answer}")

    def run_task(self, task_id: int, outcome: str, expected_jobs: int = 1, timeout: float = 180.0) -> int:
        """Finish the task's jobs so it ends ``done`` (all succeed), ``failed`` (all fail) or
        ``finished`` (the first succeeds, the others fail). Returns how many jobs were reported."""
        reported = 0
        deadline = time.monotonic() + timeout
        while reported < expected_jobs and time.monotonic() < deadline:
            jobs = self.acquire(task_id)
            if not jobs:
                time.sleep(1)
                continue
            for job in jobs:
                succeed = outcome == "done" or (outcome == "finished" and reported == 0)
                self.report(job, succeed)
                reported += 1
        if reported < expected_jobs:
            raise TimeoutError(f"only {reported} of {expected_jobs} jobs of task {task_id} could be acquired")
        return reported
