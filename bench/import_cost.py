"""DAG-parse cost: what importing the provider's operators, sensor and trigger adds to Airflow's SDK.

    python bench/import_cost.py [--runs 15]

Each measurement is a fresh interpreter, the two kinds interleaved; prints medians and the added
milliseconds (goal: <= 10 ms). The baseline is what every DAG file with an operator pays:
``airflow.sdk`` loads its bases lazily, so a bare ``import airflow.sdk`` would leave BaseOperator's
own cost to whoever touches it first. Both figures are printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from _util import median, table

BARE = "import airflow.sdk"
BASE = "from airflow.sdk import DAG, BaseOperator, BaseSensorOperator, BaseOperatorLink"
PROVIDER = ("import airflow_provider_panda.operators, airflow_provider_panda.sensors, "
            "airflow_provider_panda.triggers.wait")
OURS = f"{BASE}; {PROVIDER}"
PROBE = "import time; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"


def once(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    once(OURS)  # warm the bytecode caches
    bare, base, ours = [], [], []
    for _ in range(args.runs):  # interleaved, so machine noise hits all alike
        bare.append(once(BARE))
        base.append(once(BASE))
        ours.append(once(OURS))
    r, b, o = (median(x) * 1000 for x in (bare, base, ours))
    print(table(["import", "median ms"], [[BARE, f"{r:.1f}"], [BASE, f"{b:.1f}"],
                                           ["the same + operators, sensor, trigger", f"{o:.1f}"]]))
    print(f"\nadded by the provider: {o - b:.1f} ms over the SDK bases (goal <= 10 ms); ratio {o / b:.3f}")
    detail = subprocess.run([sys.executable, "-X", "importtime", "-c", OURS], capture_output=True, text=True).stderr
    ours_lines = [line for line in detail.splitlines() if "airflow_provider_panda" in line]
    print("\n-X importtime, the provider's own modules (self us | cumulative us | module):")
    print("\n".join(ours_lines))


if __name__ == "__main__":
    main()
