"""The package builds without warnings from our metadata and carries what Airflow's providers carry."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_clean_with_provider_metadata(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(ROOT), "-w", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    # the machine's pip configuration may warn about its own index locations; nothing else may warn
    noise = [line for line in proc.stderr.splitlines() if line.strip() and "Location 'file:" not in line]
    assert not [line for line in noise if "warn" in line.lower() or "deprecat" in line.lower()], noise
    [wheel] = tmp_path.glob("airflow_provider_panda-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "airflow_provider_panda/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata
    assert "Classifier: Framework :: Apache Airflow :: Provider" in metadata
    assert "provider_info = airflow_provider_panda:get_provider_info" in entry_points
    floor = next(line for line in metadata.splitlines() if line.startswith("Requires-Dist: apache-airflow>="))
    version = floor.split(">=")[1]
    assert (ROOT / "constraints" / f"airflow-{version}.txt").exists(), "the floor must have its CI pins"
