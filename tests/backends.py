"""The two servers the contract suite runs against, behind one interface.

``LocalBackend`` is our local server; ``RealBackend`` is panda-server 1.0.4 + JEDI started by
``integration/real_panda`` (when ``REAL_PANDA=1``). Tests submit tasks that never end by themselves
and then say how each attempt ends (``finish_attempt``): the local server is told through its
control API, the real one through a stand-in pilot that finishes or fails the jobs.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from airflow_provider_panda.testing.server import DEFAULT_USERS, LocalPandaServer, TokenIssuer

TASK_TEMPLATE: dict[str, Any] = {
    "uniqueTaskName": True, "vo": "wlcg", "prodSourceLabel": "user", "taskType": "anal",
    "processingType": "panda-client-test", "transUses": "", "transHome": None,
    "transPath": "https://pandaserver.cern.ch/trf/user/runGen-00-00-02", "architecture": "", "coreCount": 1,
    "ramCount": 2000, "walltime": 600, "noInput": True, "nEvents": 10, "nEventsPerJob": 5, "site": "TEST_SITE",
    "cloud": "WORLD", "maxAttempt": 1, "jobParameters": [{"type": "constant", "value": "echo hello"}],
}
N_JOBS = 2


class Backend:
    name = ""
    timeout = 10.0  # seconds a task needs at most to move on

    def __init__(self, url: str, issuer: TokenIssuer) -> None:
        self.url = url
        self.issuer = issuer

    def connection(self, user: str = "user", **extra: Any) -> dict[str, Any]:
        origin = "atlas:production" if user == "prod" else "atlas"
        token = self.issuer.mint(user, DEFAULT_USERS[user])
        return {"conn_type": "panda", "host": self.url, "password": token,
                "extra": {"vo": origin, "retry_wait": 0.05, **extra}}

    def task_params(self, tag: str = "c") -> dict[str, Any]:
        name = f"user.alice.contract.{tag}.{uuid.uuid4().hex[:10]}"
        log = {"type": "template", "param_type": "log", "dataset": f"{name}.log/", "value": f"{name}.log.${{SN}}.tgz"}
        return {**TASK_TEMPLATE, "taskName": name, "log": log}

    def finish_attempt(self, task_id: int, outcome: str) -> None:
        """End the task's current attempt: ``done``, ``failed`` or ``finished`` (some jobs failed)."""
        raise NotImplementedError


class LocalBackend(Backend):
    name = "local"

    def __init__(self, server: LocalPandaServer) -> None:
        super().__init__(server.url, server.issuer)
        self.server = server

    def task_params(self, tag: str = "c") -> dict[str, Any]:
        params = super().task_params(tag)
        self.server.sim.add_rule(re.escape(params["taskName"]) + "$", ["hang"])  # ends when told
        return params

    def finish_attempt(self, task_id: int, outcome: str) -> None:
        sim = self.server.sim
        with sim.lock:
            sim.advance()
            running = sim.tasks[task_id].status == "running"
            # From this attempt on the task ends as asked; a running (hanging) attempt ends now.
            sim.force(task_id, status="running" if running else None, outcomes=[outcome, "hang"])


class RealBackend(Backend):
    name = "real"
    #: JEDI's agents run on cycles; on a loaded 2-core machine a task once took over 240 s to end
    timeout = 420.0

    def __init__(self, url: str) -> None:
        super().__init__(url, TokenIssuer("contract"))
        from integration.real_panda.pilot import StandInPilot

        self.pilot = StandInPilot(url, self.issuer.mint("prod", DEFAULT_USERS["prod"]))

    def finish_attempt(self, task_id: int, outcome: str) -> None:
        self.pilot.run_task(task_id, outcome, expected_jobs=N_JOBS, timeout=self.timeout)
