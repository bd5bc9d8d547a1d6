"""The embedded GPU exporter's launcher: tie the child's life to the runner, then run the exporter.

`python -m smoltrace.gpu_child --parent-pid PID EXPORTER-FLAGS...`

- Linux: PR_SET_PDEATHSIG (prctl through ctypes) asks the kernel to send SIGTERM when the runner
  dies, even by SIGKILL; if the runner is already gone by then, exit at once.
- Everywhere: stdin is a pipe the runner never writes; end-of-file (the runner closed it or died)
  sends this process SIGTERM, which the exporter handles as a normal shutdown (runs summarised,
  OTLP flushed, exit within 5 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `signum` when the parent dies (Linux only). True when set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_stdin() -> None:
    """SIGTERM to this process when stdin ends (the runner closed its end, or died)."""

    def wait_for_eof() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_for_eof, name="smoltrace-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parent = 0
    if len(args) >= 2 and args[0] == "--parent-pid":
        parent = int(args[1]) if args[1].isdigit() else 0
        args = args[2:]
    set_parent_death_signal()
    if parent and os.getppid() != parent:  # the runner died before the signal was armed
        return 0
    watch_stdin()
    from smoltrace_gpu_exporter.cli import main as exporter_main

    return exporter_main(args)


if __name__ == "__main__":
    sys.exit(main())
