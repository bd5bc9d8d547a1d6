"""`Notices`: the run's warnings, printed once each and recorded in metadata (`notices`).

One object per run, passed to every stage that can warn, instead of a mix of `print("[WARN]")`,
`log.warning` and report lists: the console and metadata.json always say the same thing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO


class Notices:
    def __init__(self, stream: TextIO | None = None, scrub: Callable[[str], str] | None = None) -> None:
        self._stream = stream
        self._scrub = scrub or (lambda text: text)
        self._lock = threading.Lock()
        self._seen: dict[str, None] = {}

    def warn(self, message: str) -> None:
        """Print `[WARN] message` (once per distinct message) and record it (secrets scrubbed)."""
        message = self._scrub(" ".join(message.split()))
        with self._lock:
            if message in self._seen:
                return
            self._seen[message] = None
        stream = self._stream or sys.stdout
        print(f"[WARN] {message}", file=stream, flush=True)

    def record(self, message: str) -> None:
        """Record without printing (something the console already showed another way)."""
        with self._lock:
            self._seen.setdefault(self._scrub(" ".join(message.split())), None)

    def extend(self, messages: list[str]) -> None:
        for message in messages:
            self.record(message)

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._seen)

    def __len__(self) -> int:
        return len(self._seen)
