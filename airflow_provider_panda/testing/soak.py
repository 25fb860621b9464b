"""Submit-and-wait cycles under injected faults: every cycle must succeed, no task may be
duplicated or lost. Used by tests/test_soak.py (100 cycles) and bench/soak.py (1,000)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass

#: What a faulty network and server do: errors before acting, answers lost after acting, answers
#: slower than the client's timeout (after acting; "slow" is made 1.5 times the timeout), and 200
#: answers that are not PanDA's envelope: a proxy's or SSO login page (before acting) and a body cut
#: in half (after acting).
FAULT_KINDS = ["500", "502", "503", "429", "after:502", "after:503", "slow", "html", "cut"]


def fault_kinds(timeout: float) -> list[str]:
    """FAULT_KINDS with the slow answer due after the client's ``timeout``."""
    return [f"slow:{timeout * 1.5:g}" if kind == "slow" else kind for kind in FAULT_KINDS]


@dataclass
class SoakResult:
    cycles: int
    succeeded: int
    failed: int
    duplicates: int
    lost: int
    seconds: float
    injected: float

    def line(self) -> str:
        return (f"soak: {self.cycles} cycles with {self.injected:.0%} injected faults in {self.seconds:.0f} s: "
                f"{self.succeeded} succeeded, {self.failed} failed, {self.duplicates} duplicate PanDA tasks, "
                f"{self.lost} lost")


def _control(url: str, action: str, body: dict | None = None):
    request = urllib.request.Request(f"{url}/_control/{action}", data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def run_soak(connection: dict, cycles: int = 100, fault_rate: float = 0.2, concurrency: int = 25,
             poll_interval: float = 0.2, timeout: float = 5.0) -> SoakResult:
    """Run ``cycles`` submit-and-wait cycles against a local server whose connection is given. The
    client's ``timeout`` is long enough that only the injected faults, not a busy machine, time out."""
    from airflow_provider_panda.hooks.panda import PandaHook
    from airflow_provider_panda.triggers.wait import PandaTaskTrigger

    url = connection["host"]
    conn = {**connection, "extra": {**connection["extra"], "timeout": timeout, "retry_wait": 0.05, "max_retries": 6}}
    os.environ["AIRFLOW_CONN_PANDA_SOAK"] = json.dumps(conn)
    run = uuid.uuid4().hex[:8]
    hook = PandaHook("panda_soak")
    _control(url, "faults", {"rate": fault_rate, "kinds": fault_kinds(timeout), "seed": 7})
    started = time.monotonic()

    async def cycle(index: int, gate: asyncio.Semaphore) -> tuple[str, int | None, bool]:
        name = f"user.alice.soak.{run}.{index:05d}"
        params = {"taskName": name, "uniqueTaskName": True, "vo": "wlcg", "prodSourceLabel": "user",
                  "nEvents": 5, "nEventsPerJob": 5}
        async with gate:
            try:
                task_id = await asyncio.to_thread(hook.submit_task, params)
            except Exception:
                return name, None, False
            trigger = PandaTaskTrigger(task_id, "panda_soak", poll_interval=poll_interval,
                                       end_time=time.time() + 600)
            async for event in trigger.run():
                return name, task_id, event.payload["status"] == "success"
        return name, task_id, False

    async def all_cycles():
        gate = asyncio.Semaphore(concurrency)
        return await asyncio.gather(*(cycle(i, gate) for i in range(cycles)))

    try:
        outcomes = asyncio.run(all_cycles())
    finally:
        _control(url, "faults", {"rate": 0.0})
    tasks = [t for t in _control(url, "tasks") if f".soak.{run}." in t["taskName"]]
    per_name = Counter(t["taskName"] for t in tasks)
    ids = {t["taskName"]: t["jediTaskID"] for t in tasks}
    lost = sum(1 for name, task_id, _ in outcomes if per_name[name] == 0 or (task_id and ids.get(name) != task_id))
    lost += sum(1 for name, task_id, _ in outcomes if task_id is None and per_name[name])  # orphans
    succeeded = sum(ok for _, _, ok in outcomes)
    return SoakResult(cycles, succeeded, cycles - succeeded, sum(n - 1 for n in per_name.values() if n > 1), lost,
                      time.monotonic() - started, fault_rate)
