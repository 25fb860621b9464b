"""N deferred waits in one triggerer event loop: the shared poller against per-task polling.

    python bench/trigger_scale.py [--interval 5] [--sizes 100,1000,10000] [--baseline-sizes 100,1000]
                                  [--big-share 0.01] [--big-jobs 100000]

Each measurement runs in a fresh process (so memory is its own) against a fresh local server in
another process (so the server's CPU is not counted). N running tasks wait, 1% of them (100 at
N=10,000) on tasks of 100,000 jobs; after warming up, for 2K intervals (K = the poller's
SWEEP_EVERY, so the window holds two sweeps) we count the server's requests and answer bytes per
kind (change feed, sweep, per-task reads), the CPU time and the RSS; then we time how long a wait
takes to fire after its task ends three ways: a plain final status, a final status written with a
modificationTime one day in the past (as JEDI does), and a final status of a 100,000-job task.
Goals (shared poller): <= 2 requests per interval beyond the sweep's, < 10% of a core, <= 250 MB
RSS at 10,000, delay <= interval + 1 s (<= K intervals for the back-dated change). The per-task
design (``shared_poller=False``) is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request

from _util import server_process, table

FEED = "task/get_tasks_modified_since?since"
SWEEP = "task/get_tasks_modified_since?min_task_id&since"


def control(conn: dict, action: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{conn['host']}/_control/{action}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def api_counts(conn: dict) -> tuple[dict, dict]:
    answer = control(conn, "requests")
    return answer["by_variant"], answer["bytes_by_variant"]


def per_kind(before: dict, after: dict) -> dict[str, float]:
    diff = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    feed, sweep = diff.get(FEED, 0), diff.get(SWEEP, 0)
    return {"feed": feed, "sweep": sweep, "other": sum(diff.values()) - feed - sweep}


async def measure(conn: dict, n: int, interval: float, shared: bool, big: int, big_jobs: int) -> dict:
    import psutil

    from airflow_provider_panda.triggers.poller import SWEEP_EVERY
    from airflow_provider_panda.triggers.wait import PandaTaskTrigger

    process = psutil.Process()
    rss_before = process.memory_info().rss
    # tasks running for an hour already: a feed answer lists the tasks that changed, not all of them
    ids = control(conn, "bulk", {"n": n - big, "outcomes": ["hang"], "age": 3600})["ids"]
    big_ids = (control(conn, "bulk", {"n": big, "outcomes": ["hang"], "jobs": big_jobs, "age": 3600})["ids"]
               if big else [])
    events: dict[int, float] = {}

    async def wait(task_id: int) -> None:
        trigger = PandaTaskTrigger(task_id, poll_interval=interval, shared_poller=shared)
        async for _ in trigger.run():
            events[task_id] = time.monotonic()
            return

    tasks = [asyncio.ensure_future(wait(t)) for t in ids + big_ids]
    await asyncio.sleep(interval * 2)  # warm up: clients made, first rounds (a sweep) done
    window = 2 * SWEEP_EVERY
    (req0, bytes0), cpu0, wall0 = api_counts(conn), time.process_time(), time.monotonic()
    await asyncio.sleep(interval * window)
    (req1, bytes1), cpu1, wall1 = api_counts(conn), time.process_time(), time.monotonic()
    rss = process.memory_info().rss
    intervals = (wall1 - wall0) / interval
    requests, sent = per_kind(req0, req1), per_kind(bytes0, bytes1)

    async def delay(target: int, body: dict, limit: float) -> float:
        ended = time.monotonic()
        control(conn, f"tasks/{target}", body)
        while target not in events and time.monotonic() - ended < limit:
            await asyncio.sleep(0.01)
        return events[target] - ended if target in events else float("inf")

    plain = await delay(ids[len(ids) // 2], {"status": "done"}, interval * 4 + 10)
    backdated = await delay(ids[len(ids) // 3], {"status": "done", "backdate": 86400},
                            interval * (SWEEP_EVERY + 3) + 10)
    big_delay = await delay(big_ids[len(big_ids) // 2], {"status": "done"}, interval * 4 + 30) if big_ids else None
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"n": n, "big": big, "design": "shared poller" if shared else "per-task", "k": SWEEP_EVERY,
            "requests": {k: v / intervals for k, v in requests.items()},
            "bytes": {k: v / intervals for k, v in sent.items()},
            "requests_per_interval": sum(requests.values()) / intervals,
            "cpu_core_fraction": (cpu1 - cpu0) / (wall1 - wall0),
            "rss_mb": rss / 2**20, "rss_added_mb": (rss - rss_before) / 2**20,
            "delay_s": plain, "delay_backdated_s": backdated, "delay_big_s": big_delay}


def one(n: int, interval: float, shared: bool, big: int, big_jobs: int) -> None:
    """Child process: one measurement, printed as JSON on the last line."""
    with server_process("--step", "1") as conn:
        os.environ["AIRFLOW_CONN_PANDA_DEFAULT"] = json.dumps({**conn, "extra": {**conn["extra"], "max_retries": 0}})
        print(json.dumps(asyncio.run(measure(conn, n, interval, shared, big, big_jobs))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--baseline-sizes", default="100,1000")
    parser.add_argument("--big-share", type=float, default=0.01, help="share of the waits on big tasks")
    parser.add_argument("--big-jobs", type=int, default=100_000, help="jobs of each big task")
    parser.add_argument("--one", nargs=2, metavar=("N", "DESIGN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        n = int(args.one[0])
        one(n, args.interval, args.one[1] == "shared", int(n * args.big_share), args.big_jobs)
        return
    runs = [(int(n), "shared") for n in args.sizes.split(",")]
    runs += [(int(n), "per-task") for n in args.baseline_sizes.split(",") if n]
    results = []
    for n, design in runs:
        out = subprocess.run([sys.executable, __file__, "--interval", str(args.interval), "--big-share",
                              str(args.big_share), "--big-jobs", str(args.big_jobs), "--one", str(n), design],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done: {design} N={n}", flush=True)
    def kb(value: float) -> str:
        return f"{value / 1024:.0f}"

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    rows = [[r["design"], f"{r['n']} ({r['big']} big)", f"{r['requests']['feed']:.2f} / {r['requests']['sweep']:.2f} / "
             f"{r['requests']['other']:.1f}", f"{kb(r['bytes']['feed'])} / {kb(r['bytes']['sweep'])} / "
             f"{kb(r['bytes']['other'])}", f"{r['cpu_core_fraction'] * 100:.1f}%",
             f"{r['rss_mb']:.0f} (+{r['rss_added_mb']:.0f})", seconds(r["delay_s"]), seconds(r["delay_backdated_s"]),
             seconds(r["delay_big_s"])] for r in results]
    print(f"\ninterval {args.interval} s, K = {results[0]['k'] if results else '?'}; per interval: requests and KB "
          "as change feed / sweep / other (per-task reads, job lists)")
    print(table(["design", f"N (tasks of {args.big_jobs:,} jobs)", "requests / interval",
                 "KB / interval", "CPU (of a core)", "RSS MB (+ for the waits)", "delay s",
                 "delay back-dated s", "delay big task s"], rows))
    base = {r["n"]: r for r in results if r["design"] == "per-task"}
    for r in results:
        if r["design"] == "shared poller" and r["n"] in base:
            b = base[r["n"]]
            print(f"N={r['n']}: requests x{b['requests_per_interval'] / max(r['requests_per_interval'], 0.01):.0f} "
                  f"fewer, CPU x{b['cpu_core_fraction'] / max(r['cpu_core_fraction'], 1e-6):.1f} less, "
                  f"memory for the waits x{max(b['rss_added_mb'], 0.1) / max(r['rss_added_mb'], 0.1):.1f} less")


if __name__ == "__main__":
    main()
