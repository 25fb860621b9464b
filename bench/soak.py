"""The full soak: 1,000 submit-and-wait cycles through the hook and the trigger wait logic with 20%
injected faults (5xx, 429, answers lost after the server acted, answers slower than the client's
timeout, HTML pages instead of the envelope, bodies cut in half after the server acted), against a
local server in its own process.

    python bench/soak.py [--cycles 1000] [--rate 0.2]

Prints succeeded, failed, duplicate PanDA tasks and lost tasks (goal: all succeed, 0, 0).
"""

from __future__ import annotations

import argparse

from _util import server_process

from airflow_provider_panda.testing.soak import run_soak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.2)
    args = parser.parse_args()
    with server_process("--step", "0.05") as conn:
        result = run_soak(conn, cycles=args.cycles, fault_rate=args.rate)
    print(result.line())


if __name__ == "__main__":
    main()
