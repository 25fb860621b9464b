"""Per-call cost of PandaHook.get_task_status against the local server (in its own process).

    python bench/per_call.py [--calls 500]

Prints the median per call of: a bare requests.Session GET of the same endpoint (the floor), the
hook, and panda-client 2.2.0's Client.getTaskStatus; then the ratios (goals: hook/bare <= 1.15,
hook/panda-client <= 0.6). A kept-alive connection must cost about a millisecond: a server that
wrote headers and body separately would show the ~40 ms Nagle/delayed-ACK stall here.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import requests
from _util import median, server_process, table


def timed(fn, calls: int) -> float:
    fn()  # warm: connection opened, caches filled
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    plain = measure(args.calls, tls=False)
    secure = measure(args.calls, tls=True)
    names = list(plain)
    print(table(["call", "http ms per call", "https ms per call"],
                [[k, f"{plain[k]:.3f}", f"{secure[k]:.3f}"] for k in names]))
    for label, result in (("http", plain), ("https", secure)):
        hook_ms = result["PandaHook.get_task_status"]
        print(f"\n{label}: hook / bare requests = {hook_ms / result['bare requests.Session']:.2f} (goal <= 1.15), "
              f"hook / panda-client = {hook_ms / result['panda-client getTaskStatus']:.2f} (goal <= 0.6)")
    print("\nProduction is https: panda-client opens a new connection (and TLS handshake) per call, the hook"
          " keeps one session; over plain loopback http a new connection costs almost nothing.")


def measure(calls: int, tls: bool) -> dict[str, float]:
    """Median ms per call of the three clients against a local server (https with ``tls``)."""
    with server_process("--step", "0.2", *(["--tls"] if tls else [])) as conn:
        os.environ["AIRFLOW_CONN_PANDA_DEFAULT"] = json.dumps(conn)
        from airflow_provider_panda.hooks.panda import PandaHook

        hook = PandaHook()
        task_id = hook.submit_task({"taskName": "user.alice.bench.per_call", "uniqueTaskName": True})
        time.sleep(0.5)
        url = conn["host"] + "/api/v1/task/get_status"
        headers = {"Accept": "application/json", "Authorization": f"Bearer {conn['password']}",
                   "Origin": conn["extra"]["vo"]}
        session = requests.Session()
        verify = conn["extra"].get("ca_path", True)

        def bare() -> str:
            return session.get(url, params={"task_id": task_id}, headers=headers, verify=verify).json()["data"]

        # panda-client reads its server and token from the environment when imported
        os.environ.update({"PANDA_URL_SSL": conn["host"] + "/server/panda", "PANDA_URL": conn["host"] + "/server/panda",
                           "PANDA_BEHIND_REAL_LB": "1", "PANDA_AUTH": "oidc", "PANDA_AUTH_VO": conn["extra"]["vo"],
                           "PANDA_AUTH_ID_TOKEN": conn["password"], "PANDA_VERIFY_HOST": "off"})
        from pandaclient import Client

        Client.server_base_path_ssl = conn["host"] + "/api/v1"  # imported once: point it at this server
        assert bare() == hook.get_task_status(task_id) == Client.getTaskStatus(task_id)[1]
        rounds = {"bare requests.Session": [], "PandaHook.get_task_status": [], "panda-client getTaskStatus": []}
        for _ in range(3):  # interleaved blocks, so machine noise hits all alike
            rounds["bare requests.Session"].append(timed(bare, calls // 3))
            rounds["PandaHook.get_task_status"].append(timed(lambda: hook.get_task_status(task_id), calls // 3))
            rounds["panda-client getTaskStatus"].append(timed(lambda: Client.getTaskStatus(task_id), calls // 3))
        del os.environ["AIRFLOW_CONN_PANDA_DEFAULT"]
    return {name: median(values) * 1000 for name, values in rounds.items()}


if __name__ == "__main__":
    main()
