"""N deferred waits on Airflow as deployed (``make bench-deploy``): the shared poller against per-task polling.

    python bench/deploy_scale.py [--sizes 100,300] [--interval 5] [--window 10]

On the tier of :mod:`integration.deploy` (its own, in ``.deploy/bench``: PostgreSQL, Redis, two Celery
workers, two triggerers, the local PanDA server), for each N and each design one DAG run of N mapped
deferred SubmitTaskOperator instances whose PanDA tasks run until told: ``panda_deploy_scale``
(the shared poller, as shipped) and ``panda_deploy_scale_per_task`` (the same operator with the
trigger's ``shared_poller=False``: each wait reads its own task, the baseline of the ratios). Once
every wait runs in a triggerer, for ``--window`` poll intervals: the triggerers' requests to PanDA
per interval (the local server's counts by client), their CPU (both triggerers' process groups, as
a share of one core) and RSS; then every PanDA task ends at once and the delay from that moment to
each Airflow task instance's success is read from the metadata database (median and max: the max
includes resuming N instances on the workers).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from _util import table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from integration.deploy.client import TierClient, wait_until  # noqa: E402

DAGS = {"shared poller": "panda_deploy_scale", "per-task": "panda_deploy_scale_per_task"}


class Bench(TierClient):
    """The tier, measured."""

    def triggers_held(self) -> int:
        total = 0
        for name in ("triggerer-1", "triggerer-2"):
            counts = re.findall(r"(\d+) triggers currently running",
                                (self.deploy.LOG_DIR / f"{name}.log").read_text(errors="replace"))
            total += int(counts[-1]) if counts else 0
        return total

    def triggerer_usage(self) -> tuple[float, float]:
        """CPU seconds (user + system, children included) and RSS bytes of both triggerers' process groups."""
        import psutil

        groups = {self.state["pids"][n] for n in ("triggerer-1", "triggerer-2")}
        cpu = rss = 0.0
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in groups:
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
            except (psutil.Error, OSError):
                continue
        return cpu, rss

    def measure(self, n: int, design: str, interval: float, window: int) -> dict:
        dag_id = DAGS[design]
        run_id = f"bench_{design.replace(' ', '_')}_{n}_{int(time.time())}"
        self.deploy.airflow("dags", "trigger", dag_id, "-r", run_id, "-c", json.dumps({"n": n, "tag": "slow"}))
        started = time.monotonic()

        def deferred() -> int:
            return self.sql("SELECT COUNT(*) FROM task_instance WHERE run_id=%s AND task_id='submit' "
                            "AND state='deferred'", run_id)[0][0]

        wait_until(lambda: deferred() >= n and self.triggers_held() >= n, 60 + n * 3, f"{n} waits deferred")
        deferred_in = time.monotonic() - started
        time.sleep(2 * interval)  # the pollers' first rounds (sweeps of the new waits) behind us
        req0, (cpu0, _), t0 = self.triggerer_requests(), self.triggerer_usage(), time.monotonic()
        time.sleep(window * interval)
        req1, (cpu1, rss), t1 = self.triggerer_requests(), self.triggerer_usage(), time.monotonic()
        tag = "".join(c if c.isalnum() else "_" for c in run_id)[-40:]
        ids = [task["jediTaskID"] for task in self.control("tasks") if f".{tag}." in task["taskName"]]
        ended = time.time()
        for task_id in ids:
            self.control(f"tasks/{task_id}", {"status": "done"})
        wait_until(lambda: self.sql("SELECT state FROM dag_run WHERE run_id=%s", run_id)[0][0] in ("success", "failed"),
                   300 + n, "the run to end")
        ends = [row[0].timestamp() for row in self.sql(
            "SELECT end_date FROM task_instance WHERE run_id=%s AND task_id='submit' AND state='success'", run_id)]
        delays = [end - ended for end in ends]
        intervals = (t1 - t0) / interval
        return {"design": design, "n": n, "deferred_s": deferred_in, "succeeded": len(ends),
                "requests_per_interval": (req1 - req0) / intervals, "cpu_core": (cpu1 - cpu0) / (t1 - t0),
                "rss_mb": rss / 2**20, "delay_median_s": statistics.median(delays) if delays else None,
                "delay_max_s": max(delays) if delays else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,300")
    parser.add_argument("--interval", type=float, default=5.0, help="poll interval of every wait (s)")
    parser.add_argument("--window", type=int, default=10, help="poll intervals measured per run")
    args = parser.parse_args()
    os.environ.setdefault("DEPLOY_DIR", str(REPO / ".deploy" / "bench"))
    os.environ["DEPLOY_POLL_INTERVAL"] = str(args.interval)
    from integration.deploy import tier as deploy

    deploy.down()
    results = []
    try:
        state = deploy.up()
        bench = Bench(deploy, state)
        wait_until(lambda: len(bench.sql("SELECT 1 FROM dag WHERE dag_id IN %s", tuple(DAGS.values()))) == 2, 180,
                   "the DAGs to be parsed")
        idle0, t0 = bench.triggerer_usage()[0], time.monotonic()
        time.sleep(args.window)
        idle = (bench.triggerer_usage()[0] - idle0) / (time.monotonic() - t0)
        for n in [int(x) for x in args.sizes.split(",")]:
            for design in DAGS:
                results.append(bench.measure(n, design, args.interval, args.window))
                print(json.dumps(results[-1]), flush=True)
    finally:
        deploy.down()

    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    print(f"\npoll interval {args.interval:.0f} s; two triggerers idle: {idle * 100:.1f}% of a core")
    print(table(["design", "N", "deferred in s", "requests / interval", "triggerers' CPU (of a core)",
                 "triggerers' RSS MB", "delay to success s (median / max)"],
                [[r["design"], r["n"], num(r["deferred_s"], ".0f"), num(r["requests_per_interval"], ".1f"),
                  f"{r['cpu_core'] * 100:.1f}%", num(r["rss_mb"], ".0f"),
                  f"{num(r['delay_median_s'], '.1f')} / {num(r['delay_max_s'], '.1f')}"] for r in results]))
    base = {r["n"]: r for r in results if r["design"] == "per-task"}
    for r in results:
        if r["design"] == "shared poller" and r["n"] in base:
            b = base[r["n"]]
            print(f"N={r['n']}: requests x{b['requests_per_interval'] / max(r['requests_per_interval'], 0.01):.0f} "
                  f"fewer, triggerer CPU x{b['cpu_core'] / max(r['cpu_core'], 1e-6):.1f} less than per-task polling")


if __name__ == "__main__":
    main()
