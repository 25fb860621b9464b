# ruff: noqa: F811 - the fixtures backend and hook come from test_real_flows
"""Issue #11 on the real panda-server + JEDI (``REAL_PANDA=1``, ``make test-real``): a status that
JEDI writes with a back-dated ``modificationTime`` (as ``updateTaskModTimeJEDI`` does, written here
straight into the harness's database) must end a shared-poller wait within SWEEP_EVERY rounds, even
though the change feed (``task/get_tasks_modified_since``) never shows it.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from test_real_flows import backend, hook, wait_status  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(os.environ.get("REAL_PANDA") != "1", reason="needs REAL_PANDA=1")


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_real_a_back_dated_status_ends_the_wait(backend, hook, shared):
    from airflow_provider_panda.triggers import poller
    from airflow_provider_panda.triggers.wait import PandaTaskTrigger
    from integration.real_panda.harness import backdate_status

    task_id = hook.submit_task(backend.task_params("realbackdate"))
    wait_status(backend, hook, task_id, {"running"})
    interval = 1.0

    async def scenario():
        trigger = PandaTaskTrigger(task_id, poll_interval=interval, shared_poller=shared)

        async def first_event():
            async for event in trigger.run():
                return event.payload

        waiting = asyncio.ensure_future(first_event())
        if shared:  # the poller has read the task at least twice before the change
            while not any(task_id in p.readings and p.rounds >= 2 for p in list(poller._REGISTRY.values())):
                await asyncio.sleep(0.1)
        mine = next((p for p in list(poller._REGISTRY.values()) if task_id in p.readings), None) if shared else None
        rounds_before = mine.rounds if mine else 0
        await asyncio.to_thread(backdate_status, task_id, "broken")
        changed = time.monotonic()
        event = await asyncio.wait_for(waiting, 120)
        rounds = mine.rounds - rounds_before if mine else None
        return event, time.monotonic() - changed, rounds

    event, delay, rounds = asyncio.run(scenario())
    assert (event["status"], event["task_status"]) == ("failure", "broken")
    if shared:  # K = SWEEP_EVERY rounds at most, plus the round under way (counted, so load cannot fail it)
        assert rounds <= poller.SWEEP_EVERY + 2, (rounds, delay)
    else:  # own reads: the next read sees it
        assert delay <= 2 * interval + 30, delay
