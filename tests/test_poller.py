"""The shared poller is a cache: it must save requests and never hand a trigger a stale or foreign status."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import params_with_outcomes, wait_status

from airflow_provider_panda.triggers.poller import SharedPoller
from airflow_provider_panda.triggers.wait import PandaTaskTrigger

INTERVAL = 0.3


@pytest.fixture(autouse=True)
def _conn(conn_env):
    conn_env(max_retries=0)


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload


def hanging(hook, server, n, tag="poll"):
    ids = [hook.submit_task(params_with_outcomes(server, ["hang"], tag)) for _ in range(n)]
    for task_id in ids:
        wait_status(hook, task_id, {"running"})
    return ids


def polls(server):
    by = server.panda.requests
    return by["task/get_tasks_modified_since"], by["task/get_status"]


def test_many_waits_cost_one_request_per_round(hook, panda_server):
    """Counted against the poller's own rounds, not seconds: a slow machine runs fewer rounds, each
    still one request for all 20 waits."""
    ids = hanging(hook, panda_server, 20)

    async def scenario():
        triggers = [asyncio.ensure_future(first_event(PandaTaskTrigger(t, poll_interval=INTERVAL))) for t in ids]
        poller = await poller_reading(ids)
        rounds0, (bulk0, single0) = poller.rounds, polls(panda_server)
        await until(lambda: poller.rounds >= rounds0 + 5)
        rounds, (bulk1, single1) = poller.rounds - rounds0, polls(panda_server)
        assert not any(t.done() for t in triggers)
        for task_id in ids:
            panda_server.sim.force(task_id, status="running", outcomes=["done"])
        events = await asyncio.wait_for(asyncio.gather(*triggers), 60)
        return events, rounds, bulk1 - bulk0, single1 - single0

    events, rounds, bulk, single = asyncio.run(scenario())
    # one modified-since per round for all 20 waits (a round may be under way at either count), no per-task reads
    assert rounds - 1 <= bulk <= rounds + 1 and single == 0, (rounds, bulk, single)
    assert [e["jedi_task_id"] for e in events] == ids and {e["task_status"] for e in events} == {"done"}


def test_two_users_and_a_foreign_task(hook, conn_env, panda_server):
    """Bob's tasks never appear in Alice's modified-since answer; a production user watching
    Alice's task gets it by per-task reads; nobody gets anybody else's status."""
    from airflow_provider_panda.hooks.panda import PandaHook

    bob = PandaHook(conn_env("panda_bob", user="other", max_retries=0))
    conn_env("panda_prod", user="prod", max_retries=0)
    [alice_task] = hanging(hook, panda_server, 1, "alice")
    [bob_task] = hanging(bob, panda_server, 1, "bob")

    async def scenario():
        waits = [
            asyncio.ensure_future(first_event(PandaTaskTrigger(alice_task, "panda_default", INTERVAL))),
            asyncio.ensure_future(first_event(PandaTaskTrigger(bob_task, "panda_bob", INTERVAL))),
            asyncio.ensure_future(first_event(PandaTaskTrigger(alice_task, "panda_prod", INTERVAL))),
        ]
        # every wait has read its task running (three pollers, one per connection) before it changes
        await until(lambda: len(pollers := list_pollers()) == 3 and all(
            p.watchers and all(p.readings.get(t) and p.readings[t].status == "running" for t in p.watchers)
            for p in pollers))
        panda_server.sim.force(alice_task, status="running", outcomes=["failed"])
        panda_server.sim.force(bob_task, status="running", outcomes=["done"])
        return await asyncio.wait_for(asyncio.gather(*waits), 60)

    alice, bobs, prods_view = asyncio.run(scenario())
    assert (alice["jedi_task_id"], alice["task_status"]) == (alice_task, "failed")
    assert (bobs["jedi_task_id"], bobs["task_status"]) == (bob_task, "done")
    assert (prods_view["jedi_task_id"], prods_view["task_status"]) == (alice_task, "failed")


def test_a_status_that_changes_twice_within_an_interval(hook, panda_server):
    """The passing 'failed' lives between two rounds: the event loop stays free (the changes run in a
    thread), and the wait ends with the status the next round reads, never the passing one."""
    [task_id] = hanging(hook, panda_server, 1, "twice")

    def fail_then_retry():
        panda_server.sim.force(task_id, status="failed")
        hook.retry_task(task_id)  # failed, then back to work before the next round
        panda_server.sim.force(task_id, status="running", outcomes=["done"])

    async def scenario():
        # an interval long enough that the three calls of the changes fit between two rounds on a
        # starved machine (the assert below says if they did not)
        wait = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, poll_interval=30.0)))
        poller = await until(lambda: next(iter(list_pollers()), None))
        await until(lambda: poller.rounds >= 1 and task_id in poller.readings)
        rounds = poller.rounds
        await asyncio.to_thread(fail_then_retry)
        assert poller.rounds == rounds  # both changes fell between two rounds
        return await asyncio.wait_for(wait, 120)

    event = asyncio.run(scenario())
    assert event["status"] == "success" and event["task_status"] == "done"  # never the passing "failed"


async def poller_reading(ids, timeout=60.0):
    """The poller watching ``ids``, once it has a reading of each (the waits are under way)."""
    return await until(lambda: next((p for p in list_pollers() if set(ids) <= set(p.watchers)
                                     and set(ids) <= set(p.readings)), None), timeout)


async def until(predicate, timeout=60.0):
    """Wait on the event loop (never blocking it) until predicate() is truthy; return its value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
    return value


def watch_until_event(task_id, change, interval=INTERVAL, **trigger_kwargs):
    """Start a wait, let the poller settle, apply ``change`` (in a thread), and return the event and
    the number of rounds the poller took to end the wait after the change. Rounds are counted from
    the change's end, so a slow change on a busy machine adds none (one round may be under way)."""

    async def scenario():
        wait = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, poll_interval=interval, **trigger_kwargs)))
        poller = await until(lambda: next((p for p in list_pollers() if task_id in p.watchers), None))
        await until(lambda: poller.rounds >= 2 and task_id in poller.readings)
        await asyncio.to_thread(change)
        before = poller.rounds
        event = await asyncio.wait_for(wait, 60)
        return event, poller.rounds - before

    return asyncio.run(scenario())


@pytest.mark.parametrize("backdate", [3600, 86400])
def test_a_back_dated_status_ends_the_wait_within_k_rounds(hook, panda_server, backdate):
    """JEDI writes some statuses with modificationTime an hour or a day in the past: the change
    feed never shows them; the sweep must, within SWEEP_EVERY rounds."""
    from airflow_provider_panda.triggers.poller import SWEEP_EVERY

    [task_id] = hanging(hook, panda_server, 1, "backdate")
    event, rounds = watch_until_event(
        task_id, lambda: panda_server.sim.force(task_id, status="broken", backdate=backdate))
    assert (event["status"], event["task_status"]) == ("failure", "broken")
    assert rounds <= SWEEP_EVERY + 1


def test_empty_feed_answers_do_not_lose_a_change(hook, panda_server, monkeypatch):
    """The server answers {} on a database error: when such answers last longer than the window
    margin (here 1 s, at 0.1 s rounds), the change falls out of every feed window; the task's own read,
    due once no answer has confirmed it for 2 K rounds (an empty sweep is not taken for a true one),
    finds it while the feed is still answering {}."""
    from datetime import timedelta

    from airflow_provider_panda.triggers import poller

    monkeypatch.setattr(poller, "WINDOW_MARGIN", timedelta(seconds=1))
    [task_id] = hanging(hook, panda_server, 1, "emptyfeed")
    faults = 30

    def change():
        panda_server.sim.force(task_id, status="done")
        # 3 s of rounds answered {} (only this call answers {} on a database error: a task's own
        # status read answered {} is an answer we cannot read, which ends that task's wait)
        panda_server.panda.faults.extend(["empty@task/get_tasks_modified_since"] * faults)

    event, rounds = watch_until_event(task_id, change, interval=0.1)
    assert event["task_status"] == "done" and panda_server.panda.faults  # found during the outage
    assert rounds <= 2 * poller.SWEEP_EVERY + 1


def test_a_server_clock_far_behind_ours(hook, panda_server):
    """The server's clock 20 minutes behind ours (beyond the window margin): its modificationTimes
    fall before every feed window; the sweep still ends the wait."""
    from airflow_provider_panda.triggers.poller import SWEEP_EVERY

    [task_id] = hanging(hook, panda_server, 1, "skew")
    panda_server.sim.clock.advance(-1200)
    try:
        event, rounds = watch_until_event(task_id, lambda: panda_server.sim.force(task_id, status="done"))
    finally:
        panda_server.sim.clock.advance(1200)
    assert event["task_status"] == "done" and rounds <= SWEEP_EVERY + 1


def test_the_window_margin_covers_two_intervals():
    from datetime import timedelta

    from airflow_provider_panda.triggers.poller import WINDOW_MARGIN

    assert SharedPoller(("c", 600.0), None, 600.0, _Log()).margin() == timedelta(seconds=1200)
    assert SharedPoller(("c", 1.0), None, 1.0, _Log()).margin() == WINDOW_MARGIN


def test_the_safety_net_costs_one_sweep_every_k_rounds(hook, panda_server):
    """Feed and sweep are the same call: one request per round in all, a sweep every SWEEP_EVERY
    rounds, no per-task reads for tasks the answers list."""
    from airflow_provider_panda.triggers.poller import SWEEP_EVERY

    ids = hanging(hook, panda_server, 10, "netcost")

    async def scenario():
        waits = [asyncio.ensure_future(first_event(PandaTaskTrigger(t, poll_interval=0.1))) for t in ids]
        poller = await until(lambda: next((p for p in list_pollers() if ids[0] in p.watchers), None))
        await until(lambda: poller.rounds >= 2 and set(ids) <= set(poller.readings))
        rounds0, sent0 = poller.rounds, dict(poller.sent)
        await until(lambda: poller.rounds >= rounds0 + 3 * SWEEP_EVERY)
        rounds, sent = poller.rounds - rounds0, {k: poller.sent[k] - sent0[k] for k in sent0}
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        return rounds, sent

    rounds, sent = asyncio.run(scenario())
    assert sent["feed"] + sent["sweep"] in (rounds, rounds + 1) and sent["single"] == 0
    assert abs(sent["sweep"] - rounds / SWEEP_EVERY) <= 1


def test_failing_rounds_keep_every_wait_and_recover(hook, panda_server):
    ids = hanging(hook, panda_server, 3, "flaky")

    async def scenario():
        waits = [asyncio.ensure_future(first_event(PandaTaskTrigger(t, poll_interval=INTERVAL))) for t in ids]
        poller = await poller_reading(ids)
        panda_server.panda.faults.extend(["503"] * 4)
        await until(lambda: not panda_server.panda.faults)  # four rounds failed (max_retries=0)
        rounds = poller.rounds
        await until(lambda: poller.rounds > rounds)  # and the poller went on after them
        assert not any(w.done() for w in waits)
        for task_id in ids:
            panda_server.sim.force(task_id, status="running", outcomes=["done"])
        return await asyncio.wait_for(asyncio.gather(*waits), 60)

    events = asyncio.run(scenario())
    assert {e["task_status"] for e in events} == {"done"} and not panda_server.panda.faults


def test_a_cancelled_wait_leaves_the_others_running(hook, panda_server):
    ids = hanging(hook, panda_server, 3, "cancel")

    async def scenario():
        waits = [asyncio.ensure_future(first_event(PandaTaskTrigger(t, poll_interval=INTERVAL))) for t in ids]
        poller = await poller_reading(ids)
        waits[0].cancel()
        await until(lambda: ids[0] not in poller.watchers)
        rounds = poller.rounds
        await until(lambda: poller.rounds >= rounds + 2)  # the poller goes on for the others
        assert set(ids[1:]) <= set(poller.watchers) and not any(w.done() for w in waits[1:])
        assert list_pollers() == [poller]
        for task_id in ids[1:]:
            panda_server.sim.force(task_id, status="running", outcomes=["done"])
        events = await asyncio.wait_for(asyncio.gather(*waits[1:]), 60)
        await until(lambda: not list_pollers())  # the last wait gone, the poller closed itself
        return events

    events = asyncio.run(scenario())
    assert {e["task_status"] for e in events} == {"done"}


def test_a_new_wait_never_takes_a_reading_older_than_itself(hook, panda_server):
    [task_id] = hanging(hook, panda_server, 1, "fresh")
    panda_server.sim.force(task_id, status="failed")

    async def scenario():
        poller = await SharedPoller.acquire("panda_default", INTERVAL, _Log())
        first = poller.watch(task_id)
        status, _ = await poller.next_status(task_id, first)
        assert status == "failed"
        hook.retry_task(task_id)  # the cached reading says failed; the task is being retried
        second = poller.watch(task_id)
        renewed, started = await poller.next_status(task_id, second)
        await poller.unwatch(task_id)
        await poller.unwatch(task_id)
        return renewed, started > second

    renewed, fresh = asyncio.run(scenario())
    assert fresh and renewed != "failed"


def test_falls_back_to_per_task_reads_without_the_bulk_call(hook, panda_server, monkeypatch):
    """A server without task/get_tasks_modified_since answers 403 'method ... is forbidden'."""
    ids = hanging(hook, panda_server, 2, "nobulk")
    monkeypatch.setitem(panda_server.panda.handlers.__dict__, "get_tasks_modified_since", None)

    async def scenario():
        waits = [asyncio.ensure_future(first_event(PandaTaskTrigger(t, poll_interval=INTERVAL))) for t in ids]
        poller = await poller_reading(ids)
        assert not poller.bulk  # the 403 made it fall back
        rounds, singles = poller.rounds, polls(panda_server)[1]
        await until(lambda: poller.rounds >= rounds + 2)
        # read task by task, every round (a round may be under way at either count)
        assert polls(panda_server)[1] - singles >= len(ids) * (poller.rounds - rounds - 1)
        for task_id in ids:
            panda_server.sim.force(task_id, status="running", outcomes=["done"])
        return await asyncio.wait_for(asyncio.gather(*waits), 60)

    assert {e["task_status"] for e in asyncio.run(scenario())} == {"done"}


class _Log:
    def __getattr__(self, name):
        return lambda *a, **k: None


def list_pollers():
    from airflow_provider_panda.triggers import poller

    return list(poller._REGISTRY.values())


# --- errors no later round can mend reach every waiter; a failed read never confirms a reading ----

NOT_A_DICT = 'body:{"success": true, "data": [1, 2]}@task/get_tasks_modified_since'


def test_an_unreadable_bulk_answer_ends_every_wait_with_an_error(hook, panda_server):
    """A modified-since answer of a shape we cannot read (PandaResponseError) is not mended by the
    next round: every wait on the connection ends with an error event, as the sync path fails."""
    ids = hanging(hook, panda_server, 3, "badshape")
    panda_server.panda.faults.extend([NOT_A_DICT] * 100)  # every round: more than any wait could need

    async def scenario():
        waits = [first_event(PandaTaskTrigger(t, poll_interval=INTERVAL)) for t in ids]
        return await asyncio.wait_for(asyncio.gather(*waits), 60)

    events = asyncio.run(scenario())
    assert {(e["status"], e["error_type"]) for e in events} == {("error", "PandaResponseError")}
    assert sorted(e["jedi_task_id"] for e in events) == sorted(ids)
    assert not list_pollers()


@pytest.mark.parametrize("shared", [True, False], ids=["shared poller", "own reads"])
def test_an_unreadable_token_file_ends_the_wait_with_an_error(hook, panda_server, conn_env, tmp_path, shared):
    """The token file disappears during the wait: no round can mend it (the connection still names
    it), so the wait ends with an error event instead of a warning per round forever."""
    import json
    import os

    token_file = tmp_path / "token"
    token_file.write_text(panda_server.token("user"))
    conn = panda_server.connection("user", retry_wait=0.01, max_retries=0, token_file=str(token_file))
    conn["password"] = ""
    os.environ["AIRFLOW_CONN_PANDA_TOKENFILE"] = json.dumps(conn)
    try:
        [task_id] = hanging(hook, panda_server, 1, "tokenfile")

        async def scenario():
            wait = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, "panda_tokenfile", INTERVAL,
                                                                      shared_poller=shared)))
            reads = sum(polls(panda_server))
            await until(lambda: sum(polls(panda_server)) >= reads + 2)  # the wait is under way
            token_file.unlink()
            return await asyncio.wait_for(wait, 60)

        event = asyncio.run(scenario())
    finally:
        del os.environ["AIRFLOW_CONN_PANDA_TOKENFILE"]
    assert (event["status"], event["error_type"]) == ("error", "PandaConnectionConfigError")
    assert "cannot read token_file" in event["message"]


def no_bulk(panda_server, monkeypatch):
    monkeypatch.setitem(panda_server.panda.handlers.__dict__, "get_tasks_modified_since", None)


def test_without_bulk_a_failed_read_is_no_confirmation(hook, panda_server, monkeypatch):
    """Task by task (no modified-since on the server), a read that failed leaves the waiter waiting:
    the last reading is not handed out again as if this round had read it."""
    [task_id] = hanging(hook, panda_server, 1, "nobulkfail")
    no_bulk(panda_server, monkeypatch)

    async def scenario():
        poller = await SharedPoller.acquire("panda_default", 0.05, _Log())
        try:
            status, started = await poller.next_status(task_id, poller.watch(task_id))
            assert status == "running" and not poller.bulk
            panda_server.panda.fault_kinds, panda_server.panda.fault_rate = ["503"], 1.0  # every read fails
            rounds = poller.rounds
            later = asyncio.ensure_future(poller.next_status(task_id, started))
            await until(lambda: poller.rounds >= rounds + 4)
            confirmed = later.done()
            panda_server.panda.fault_rate = 0.0
            status, _ = await asyncio.wait_for(later, 60)  # the reads work again: a true reading
            return confirmed, status
        finally:
            panda_server.panda.fault_rate = 0.0
            await poller.unwatch(task_id)

    confirmed, status = asyncio.run(scenario())
    assert not confirmed and status == "running"


def test_an_empty_sweep_is_no_confirmation(hook, panda_server, monkeypatch):
    """A sweep answered {} (the server's database error) confirms nothing: the waiter gets its next
    reading only from a round that read the task (here: its own read once the sweeps stay empty)."""
    from airflow_provider_panda.triggers import poller as poller_module

    monkeypatch.setattr(poller_module, "SWEEP_EVERY", 1)  # every round is a sweep
    [task_id] = hanging(hook, panda_server, 1, "emptysweep")

    async def scenario():
        poller = await SharedPoller.acquire("panda_default", 0.05, _Log())
        try:
            await poller.next_status(task_id, poller.watch(task_id))
            await until(lambda: task_id in poller.covered)  # a sweep listed it: later sweeps must too
            panda_server.panda.faults.extend(["empty@task/get_tasks_modified_since"] * 1000)
            singles = poller.sent["single"]
            status, _ = await asyncio.wait_for(poller.next_status(task_id, time.monotonic()), 60)
            return status, poller.sent["single"] - singles
        finally:
            panda_server.panda.faults.clear()
            await poller.unwatch(task_id)

    status, singles = asyncio.run(scenario())
    assert status == "running" and singles >= 1  # the reading came from a read of the task itself


def test_without_bulk_refused_credentials_end_every_wait(hook, panda_server, monkeypatch):
    """Task by task, a 403 on the per-task read is the credentials refused: every wait ends with the
    auth error (as with the bulk call), not a warning per task per round forever."""
    ids = hanging(hook, panda_server, 2, "nobulk403")
    no_bulk(panda_server, monkeypatch)
    panda_server.panda.fault_kinds, panda_server.panda.fault_rate = ["403"], 1.0

    async def scenario():
        waits = [first_event(PandaTaskTrigger(t, poll_interval=INTERVAL)) for t in ids]
        return await asyncio.wait_for(asyncio.gather(*waits), 60)

    events = asyncio.run(scenario())
    assert {(e["status"], e["error_type"]) for e in events} == {("error", "PandaAuthError")}


def test_without_bulk_a_refused_read_ends_that_wait(hook, panda_server, monkeypatch):
    """Task by task, the server saying no about the task itself (success: false) is an answer, not a
    fault: the wait ends with that error, as it does with the trigger's own reads."""
    [task_id] = hanging(hook, panda_server, 1, "nobulkno")
    no_bulk(panda_server, monkeypatch)

    async def scenario():
        wait = asyncio.ensure_future(first_event(PandaTaskTrigger(task_id, poll_interval=INTERVAL)))
        poller = await until(lambda: next((p for p in list_pollers() if task_id in p.watchers), None))
        await until(lambda: task_id in poller.readings)
        panda_server.panda.faults.append('body:{"success": false, "message": "no such luck"}@task/get_status')
        return await asyncio.wait_for(wait, 60)

    event = asyncio.run(scenario())
    assert (event["status"], event["error_type"], event["message"]) == ("error", "PandaCallFailed", "no such luck")
