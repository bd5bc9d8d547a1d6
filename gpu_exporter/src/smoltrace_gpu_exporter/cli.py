"""`smoltrace-gpu-exporter`: run the exporter until SIGTERM/SIGINT.

On start it prints one JSON line to stdout with the bound addresses (port 0 picks free ports), so
a parent process (the runner's embedded default) can find it:
  {"event": "ready", "grpc": "127.0.0.1:50051", "metrics": "127.0.0.1:9402", ...}
SIGTERM stops the live runs (their summaries are kept), flushes OTLP and exits 0 within 5 s.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from . import __version__
from .config import ConfigError, load_config


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
        config.read_auth_token()  # unreadable token/TLS files are flag errors: report them before NVML starts
        config.read_tls()
    except ConfigError as err:
        print(f"smoltrace-gpu-exporter: error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .app import ExporterApp  # heavy imports after argument checks

    app = ExporterApp(config)
    try:
        addresses = app.start()
    except (ConfigError, OSError, RuntimeError) as err:
        print(f"smoltrace-gpu-exporter: error: {err}", file=sys.stderr)
        app.stop(deadline_s=1.0)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        logging.getLogger(__name__).info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health = app.sampler.health
    print(
        json.dumps(
            {
                "event": "ready",
                "version": __version__,
                "grpc": addresses.grpc,
                "metrics": addresses.metrics,
                "backend": app.backend.name,
                "simulated": app.backend.simulated,
                "nvml_up": health.nvml_up,
                "gpus": len(app.sampler.devices()),
                "message": health.nvml_error,
            }
        ),
        flush=True,
    )
    while not stop.wait(0.25):  # short waits: a signal may land on another thread
        pass
    started = time.monotonic()
    app.stop(deadline_s=3.5)
    logging.getLogger(__name__).info("stopped in %.2f s", time.monotonic() - started)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is stopped and flushed: leave now. Daemon threads still encoding an abandoned OTLP
    # push (a collector that went away) would otherwise hold the interpreter's exit for seconds.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
