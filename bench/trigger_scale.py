"""N deferred waits in one triggerer event loop: the shared poller against per-task polling.

    python bench/trigger_scale.py [--interval 5] [--sizes 100,1000,10000] [--baseline-sizes 100,1000]

Each measurement runs in a fresh process (so memory is its own) against a fresh local server in
another process (so the server's CPU is not counted). N running tasks wait; after warming up, for
a few intervals we count the server requests, the CPU time and the RSS; then one task ends and we
time how long its trigger takes to fire. Goals (shared poller): <= 2 requests per interval at every
N, <= 200 MB RSS at 10,000, < 10% of a core per interval, delay <= interval + 1 s. The per-task design
(``shared_poller=False``, what every provider does today) is the baseline of the ratios.
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

WINDOW_INTERVALS = 3


def control(conn: dict, action: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{conn['host']}/_control/{action}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return json.loads(answer.read())


def api_requests(conn: dict) -> int:
    return sum(control(conn, "requests")["by_call"].values())


async def measure(conn: dict, n: int, interval: float, shared: bool) -> dict:
    import psutil

    from airflow_provider_panda.triggers.task import PandaTaskTrigger

    process = psutil.Process()
    rss_before = process.memory_info().rss
    ids = control(conn, "bulk", {"n": n, "outcomes": ["hang"]})["ids"]
    events: dict[int, float] = {}

    async def wait(task_id: int) -> None:
        trigger = PandaTaskTrigger(task_id, poll_interval=interval, shared_poller=shared)
        async for _ in trigger.run():
            events[task_id] = time.monotonic()
            return

    tasks = [asyncio.ensure_future(wait(t)) for t in ids]
    await asyncio.sleep(interval * 2)  # warm up: clients made, first rounds done
    requests0, cpu0, wall0 = api_requests(conn), time.process_time(), time.monotonic()
    await asyncio.sleep(interval * WINDOW_INTERVALS)
    requests1, cpu1, wall1 = api_requests(conn), time.process_time(), time.monotonic()
    rss = process.memory_info().rss
    intervals = (wall1 - wall0) / interval
    target = ids[len(ids) // 2]
    ended = time.monotonic()
    control(conn, f"tasks/{target}", {"status": "done"})
    while target not in events and time.monotonic() - ended < interval * 4 + 10:
        await asyncio.sleep(0.01)
    delay = events[target] - ended if target in events else float("inf")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"n": n, "design": "shared poller" if shared else "per-task", "requests_per_interval":
            (requests1 - requests0) / intervals, "cpu_core_fraction": (cpu1 - cpu0) / (wall1 - wall0),
            "rss_mb": rss / 2**20, "rss_added_mb": (rss - rss_before) / 2**20, "delay_s": delay}


def one(n: int, interval: float, shared: bool) -> None:
    """Child process: one measurement, printed as JSON on the last line."""
    with server_process("--step", "1") as conn:
        os.environ["AIRFLOW_CONN_PANDA_DEFAULT"] = json.dumps({**conn, "extra": {**conn["extra"], "max_retries": 0}})
        print(json.dumps(asyncio.run(measure(conn, n, interval, shared))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--baseline-sizes", default="100,1000")
    parser.add_argument("--one", nargs=2, metavar=("N", "DESIGN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(int(args.one[0]), args.interval, args.one[1] == "shared")
        return
    runs = [(int(n), "shared") for n in args.sizes.split(",")]
    runs += [(int(n), "per-task") for n in args.baseline_sizes.split(",") if n]
    results = []
    for n, design in runs:
        out = subprocess.run([sys.executable, __file__, "--interval", str(args.interval), "--one", str(n), design],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done: {design} N={n}", flush=True)
    rows = [[r["design"], r["n"], f"{r['requests_per_interval']:.1f}", f"{r['cpu_core_fraction'] * 100:.1f}%",
             f"{r['rss_mb']:.0f} (+{r['rss_added_mb']:.0f})", f"{r['delay_s']:.2f}"] for r in results]
    print(f"\ninterval {args.interval} s")
    print(table(["design", "N", "requests / interval", "CPU (of a core)", "RSS MB (+ for the waits)",
                 "delay to event s"], rows))
    base = {r["n"]: r for r in results if r["design"] == "per-task"}
    for r in results:
        if r["design"] == "shared poller" and r["n"] in base:
            b = base[r["n"]]
            print(f"N={r['n']}: requests x{b['requests_per_interval'] / max(r['requests_per_interval'], 0.01):.0f} "
                  f"fewer, CPU x{b['cpu_core_fraction'] / max(r['cpu_core_fraction'], 1e-6):.1f} less, "
                  f"memory for the waits x{max(b['rss_added_mb'], 0.1) / max(r['rss_added_mb'], 0.1):.1f} less")


if __name__ == "__main__":
    main()
