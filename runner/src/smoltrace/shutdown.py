"""Ending a run early, cleanly: the one "stop dispatching" mechanism of the executor.

A stop is requested by a signal (SIGINT, SIGTERM, SIGHUP: Ctrl-C, `docker stop`, a preempted
Kubernetes pod, a closed terminal) or by the run itself (a burst of auth errors; budgets). The
first request wins and says how the run ends (`StopReason`: metadata status, exit code). Then:
no new execution starts, running ones get `grace_s` to finish, and everything done is written.
A second signal cuts the grace short (running executions are interrupted at their next step);
what is done is still written. Before the run folder exists (`armed` false) a signal aborts
start-up at once, since there is nothing to save.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

HANDLED_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
AUTH_BURST = 3  # this many auth errors in a row before any other outcome stop the run


@dataclass(frozen=True, slots=True)
class StopReason:
    kind: str  # "signal", "auth_error", "budget"
    detail: str  # one line for the console and metadata
    status: str  # metadata status: interrupted, failed, budget_exhausted
    exit_code: int
    signal_name: str | None = None
    wait_for_running: bool = False  # a budget: running executions finish (no grace limit, no interrupt)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "signal": self.signal_name, "exit_code": self.exit_code}


def signal_reason(signum: int) -> StopReason:
    name = signal.Signals(signum).name
    code = 130 if signum == signal.SIGINT else 128 + signum
    return StopReason("signal", f"stopped by {name}", "interrupted", code, name)


class Shutdown:
    """Shared by the signal handlers, the executor and whatever else may stop a run."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self.reason: StopReason | None = None
        self.armed = False  # the run folder exists: from now on a signal asks instead of aborting
        self._lock = threading.Lock()
        self._previous: dict[int, Any] = {}

    def request(self, reason: StopReason) -> bool:
        """Ask the run to stop; False when a stop was already requested (the first reason stays)."""
        with self._lock:
            if self.requested.is_set():
                return False
            self.reason = reason
            self.requested.set()
            return True

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.request(signal_reason(signum)):
            if not self.hurry.is_set():
                self.hurry.set()
                print(f"smoltrace-eval: {signal.Signals(signum).name} again: stopping running tasks now", file=sys.stderr, flush=True)
            return
        if not self.armed:
            raise KeyboardInterrupt  # start-up: nothing written yet, nothing to save
        print(
            f"smoltrace-eval: {signal.Signals(signum).name}: no new tasks; running ones may finish within "
            f"{self.grace_s:g} s, then the results are written (signal again to stop them now)",
            file=sys.stderr,
            flush=True,
        )

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[Shutdown]:
        """Install the handlers (main thread only; elsewhere signals keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()


class AuthErrorBurst:
    """The first `limit` outcomes all auth errors (no success, no other outcome in between): the
    credentials are wrong, not the model; running the rest would only repeat it."""

    def __init__(self, limit: int = AUTH_BURST) -> None:
        self.limit = limit
        self.count = 0
        self.settled = False  # something other than an auth error came back: never fires

    def observe(self, error_type: str | None) -> bool:
        if self.settled:
            return False
        if error_type != "auth_error":
            self.settled = True
            return False
        self.count += 1
        return self.count >= self.limit
