"""Run a command while every core is kept busy: the flake check (``make test-stress``).

One busy-looping process per core (plus ``--extra``), at normal priority, for as long as the
command runs; they are stopped whatever the command's outcome, and its exit code is returned.
Usage: ``python scripts/with_cpu_hog.py [--extra N] -- COMMAND...``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def _spin() -> None:
    while True:
        pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=0, help="busy processes beyond one per core")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range((os.cpu_count() or 1) + args.extra)]
    for hog in hogs:
        hog.start()
    print(f"with_cpu_hog: {len(hogs)} busy processes on {os.cpu_count()} cores", flush=True)
    started = time.monotonic()
    try:
        return subprocess.call(command)
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.join(10)
        print(f"with_cpu_hog: the command ran {time.monotonic() - started:.0f} s under load", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
