"""Helpers shared by the benchmarks: a local server in its own process, medians and tables."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from contextlib import contextmanager


@contextmanager
def server_process(*args: str):
    """The local PanDA server in a separate process (its CPU is not ours); yields its connection."""
    proc = subprocess.Popen([sys.executable, "-m", "airflow_provider_panda.testing.server", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def median(values):
    return statistics.median(values)


def table(headers: list[str], rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in [h, *[r[i] for r in rows]]) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]])
