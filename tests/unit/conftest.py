"""The unit layer: pure modules only (no server, no Airflow DAG run, no network, no sleep).

Light on purpose. A fake clock stands in for the wall and monotonic clocks of
:mod:`airflow_provider_panda.waiting`; registering a secret for redaction does not tell Airflow's
masker (importing it loads Airflow, seconds for one line)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_panda import masking


class Clock:
    """Wall (epoch) and monotonic time that only move when a test says so."""

    def __init__(self, wall: float = 1_700_000_000.0, mono: float = 1000.0) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    sleep = advance  # an injected sleep moves the clock instead of waiting


class RecordingLog:
    """A logger stand-in that keeps (level, formatted message) of each line."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []

    def _log(self, level: int, msg: str, *args: Any) -> None:
        self.lines.append((level, msg % args if args else msg))

    def info(self, msg: str, *args: Any) -> None:
        self._log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any) -> None:
        self._log(logging.WARNING, msg, *args)

    def texts(self, level: int | None = None) -> list[str]:
        return [text for lvl, text in self.lines if level is None or lvl == level]


@pytest.fixture
def clock(mocker: Any) -> Clock:
    """The clock :mod:`airflow_provider_panda.waiting` reads (``time.time``, ``time.monotonic``)."""
    from airflow_provider_panda import waiting

    fake = Clock()
    mocker.patch.object(waiting, "time", fake)
    return fake


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


@pytest.fixture(autouse=True)
def _no_airflow_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(masking, "airflow_mask", lambda secret: None)
