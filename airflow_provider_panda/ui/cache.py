"""One read of a PanDA task per TTL, shared by every viewer in the api-server process.

A room of people watching a task costs PanDA what one viewer costs: the first request after the TTL
reads, the requests that arrive meanwhile wait for that read (single flight) and share its answer. A
failed read is kept for the TTL too, so a PanDA outage is not multiplied by the viewers.
Each entry also keeps the statuses the view has seen the task in, with when (the status history).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Seconds one read of a task is shared for.
DEFAULT_TTL = 10.0
#: Tasks kept at most (least recently read dropped first).
MAX_ENTRIES = 2000
#: Status changes kept per task.
MAX_HISTORY = 50


@dataclass
class _Entry:
    value: dict[str, Any] | None = None
    error: str | None = None
    read_at: float = float("-inf")
    history: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class TaskCache:
    """``get(key, load)``: ``load()``'s answer, read at most once per ``ttl`` seconds per key."""

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_entries = max_entries
        self.reads = 0  # loads started: what PanDA was asked, for tests and the docs' figure
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, key: Hashable) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry

    def _fresh(self, entry: _Entry) -> bool:
        return self.clock() - entry.read_at < self.ttl

    def get(self, key: Hashable, load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``{"task": snapshot or None, "error": text or None, "age": seconds, "history": [[status, since]]}``."""
        entry = self._entry(key)
        if not self._fresh(entry):
            with entry.lock:  # one load per key; the others wait here and then find it fresh
                if not self._fresh(entry):
                    self.reads += 1
                    try:
                        entry.value, entry.error = load(), None
                    except Exception as exc:  # shown in the view; the hook's texts hold no secret
                        entry.error = f"{type(exc).__name__}: {str(exc)[:300]}"
                    entry.read_at = self.clock()
                    status = (entry.value or {}).get("status")
                    if status and (not entry.history or entry.history[-1][0] != status):
                        seen = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                        entry.history = [*entry.history, [status, seen]][-MAX_HISTORY:]
        return {"task": entry.value, "error": entry.error, "age": round(max(0.0, self.clock() - entry.read_at), 1),
                "history": list(entry.history)}
