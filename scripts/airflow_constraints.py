"""Write constraints/airflow-<version>.txt: every package `pip install apache-airflow==<version>` needs,
resolved from PyPI as it stood shortly after that release (what Airflow's own constraint files pin).

Usage: python scripts/airflow_constraints.py 3.1.2 2025-11-09   (the date: a few days after the release)
Run it with the Python CI uses: wheels and markers are resolved for the running interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HEADER = """# Pins that make apache-airflow {version} install and run today, as Airflow's own constraint files do:
# every package of `pip install apache-airflow=={version}` resolved from PyPI as it stood on {date}
# (`python scripts/airflow_constraints.py {version} {date}`). Without pins pip takes today's pydantic
# and structlog, on which Airflow 3.1/3.2 fail (`TITerminalStatePayload needs a discriminator`,
# `cannot import Styles`). Used by `make test-oldest` / `make test-airflow-{version}`.
"""


def main(version: str, date: str) -> Path:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        # --isolated: PyPI only (local wheel caches carry no upload dates, so they would slip past the cut-off)
        subprocess.run([sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
                        "--quiet", "--report", str(report), "--uploaded-prior-to", f"{date}T00:00:00Z",
                        f"apache-airflow=={version}"], check=True)
        packages = json.loads(report.read_text())["install"]
    pins = sorted(f"{p['metadata']['name']}=={p['metadata']['version']}" for p in packages)
    target = Path(__file__).parents[1] / "constraints" / f"airflow-{version}.txt"
    target.write_text(HEADER.format(version=version, date=date) + "\n".join(pins) + "\n")
    return target


if __name__ == "__main__":
    print(main(*sys.argv[1:3]))
