"""The operators', sensor's, trigger's and decorator's shared parameters, checked in one place.

Each check fails before any request with a :class:`PandaInputError` naming the parameter; an
argument that has no effect where it is given warns (:func:`no_effect`) rather than being ignored.
"""

from __future__ import annotations

import math
import sys
import warnings
from datetime import timedelta
from typing import Any

from airflow_provider_panda.exceptions import PandaInputError

#: Seconds between status reads: a day at most (PanDA tasks run for days; a read costs one request).
MAX_POLL_INTERVAL = 24 * 3600.0
#: What a wait that timed out does to a task its operator owns.
ON_TIMEOUT = ("fail", "kill", "finish")
MAX_AUTO_RETRIES = 100


def number_in_range(value: Any, name: str, low: float, high: float = math.inf) -> float:
    """A finite number in [low, high] (poll intervals, timeouts, graces)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PandaInputError(f"{name} must be a finite number, got {value!r:.40}")
    if not low <= value <= high:
        raise PandaInputError(f"{name} must be between {low} and {high}, got {value}")
    return float(value)


def poll_interval(value: Any, name: str = "poll_interval") -> float:
    """Seconds between two status reads (a ``timedelta`` too, as Airflow's ``poke_interval`` takes)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    return number_in_range(value, name, 0.01, MAX_POLL_INTERVAL)


def stored_interval(value: Any) -> float:
    """A poll interval from a trigger's stored kwargs, brought into range rather than refused: a
    trigger deferred by an earlier release must still load in the triggerer."""
    try:
        seconds = float(value.total_seconds() if isinstance(value, timedelta) else value)
    except (TypeError, ValueError):
        return 60.0
    return min(max(seconds, 0.01), MAX_POLL_INTERVAL) if math.isfinite(seconds) else 60.0


def timeout(value: Any) -> float | None:
    """Seconds a wait may take; None waits as long as the task runs."""
    return None if value is None else number_in_range(value, "timeout", 0.01)


def grace(value: Any, name: str = "not_found_grace") -> float:
    return number_in_range(value, name, 0)


def one_of(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PandaInputError(f"{name} must be one of {choices}, got {value!r}")
    return value


def auto_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AUTO_RETRIES:
        raise PandaInputError(f"auto_retries must be an integer from 0 to {MAX_AUTO_RETRIES}, got {value!r}")
    return value


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable``, as Airflow's own deferrable operators read it."""
    from airflow_provider_panda.compat import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _users_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the user's code (the DAG file), past this
    package's frames and Airflow's (an operator's __init__ runs inside Airflow's wrappers)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__") or "").split(".")[0] in ("airflow_provider_panda",
                                                                                          "airflow"):
        frame, level = frame.f_back, level + 1
    return level


def no_effect(where: str, name: str, why: str) -> None:
    """Warn (at DAG parse, pointing at the DAG file) that an argument is ignored where it was given."""
    warnings.warn(f"{where}: no effect from {name} here: {why}", UserWarning, stacklevel=_users_stacklevel())


def renamed(where: str, old: str, new: str) -> None:
    """Warn that a parameter was renamed (the old name still works for now)."""
    warnings.warn(f"{where}({old}=...) is deprecated: use {new}=...", DeprecationWarning,
                  stacklevel=_users_stacklevel())
