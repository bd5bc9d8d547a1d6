"""The Ollama server of an `--provider ollama` run, through Ollama's own client (`ollama.Client`).

- Where it is: `--api-base`, else `$OLLAMA_HOST`, else the default, parsed exactly as Ollama
  parses `OLLAMA_HOST` (`localhost`, `0.0.0.0`, `:11435`, `host:port`, `https://host`, IPv6...).
- Before any task runs: `list` (the server answers) and `show` (the model is there). A missing
  model is one clear error naming it and the pull command, unless `--ollama-pull` pulls it (with a
  progress bar).
- After warm-up (the model loaded with an empty generate, as Ollama documents for preloading):
  `ps` says where the model sits: `size_vram` of `size` on the GPU. A model on the CPU makes the
  GPU metrics measure nothing of it, which the run says.

Chat calls stay on litellm's `ollama_chat/` route (what the OpenInference instrumentation sees).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from .models import ModelSetupError

log = logging.getLogger(__name__)


def base_url(api_base: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The server URL, exactly as Ollama's client resolves `OLLAMA_HOST` (scheme, host, port)."""
    from ollama._client import _parse_host

    env = os.environ if environ is None else environ
    return _parse_host(api_base or env.get("OLLAMA_HOST") or None)


def _shown(model: str) -> str:
    """The model as the user named it, without a litellm route prefix."""
    for prefix in ("ollama_chat/", "ollama/"):
        if model.startswith(prefix):
            return model[len(prefix) :]
    return model


def model_name(model: str) -> str:
    """The name Ollama knows (`llama3` is `llama3:latest`)."""
    model = _shown(model)
    last = model.rsplit("/", 1)[-1]
    return model if ":" in last else f"{model}:latest"


def _client(base: str, timeout: float | None) -> Any:
    import ollama

    return ollama.Client(host=base, timeout=timeout)


def _unreachable(base: str, err: BaseException) -> ModelSetupError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ModelSetupError(
        f"cannot reach the Ollama server at {base} ({reason}); start it (`ollama serve`) or set --api-base / OLLAMA_HOST"
    )


def check(base: str, model: str, pull: bool = False, timeout: float = 5.0, show_progress: bool = True) -> str:
    """The server answers and has the model (pulled first with `pull`); raises ModelSetupError."""
    import httpx
    import ollama

    client = _client(base, timeout)
    name, shown = model_name(model), _shown(model)
    try:
        client.list()
        client.show(name)
    except ollama.ResponseError as err:
        if err.status_code != 404:
            raise ModelSetupError(f"the Ollama server at {base} answered {err.status_code}: {err.error}") from err
        if not pull:
            raise ModelSetupError(
                f"Ollama at {base} has no model {shown!r}; pull it with `ollama pull {shown}` (or run with --ollama-pull)"
            ) from err
        pull_model(_client(base, None), shown, show_progress)
    except (httpx.HTTPError, ConnectionError, OSError) as err:
        raise _unreachable(base, err) from err
    return f"ollama {shown} at {base}"


def pull_model(client: Any, name: str, show_progress: bool = True) -> None:
    """`ollama pull`, with a progress bar of the layers as they download."""
    import ollama
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True, disable=not show_progress) as bar:
        tasks: dict[str, Any] = {}
        try:
            for chunk in client.pull(name, stream=True):
                digest, total, done = chunk.get("digest"), chunk.get("total"), chunk.get("completed")
                if digest and total:
                    if digest not in tasks:
                        tasks[digest] = bar.add_task(f"pulling {name} {digest.split(':')[-1][:12]}", total=total)
                    bar.update(tasks[digest], completed=done or 0)
                elif chunk.get("status"):
                    log.info("ollama pull %s: %s", name, chunk["status"])
        except ollama.ResponseError as err:
            raise ModelSetupError(f"`ollama pull {name}` failed: {err.error}") from err


def load(base: str, model: str, timeout: float = 300.0) -> None:
    """Load the model into the server's memory (an empty generate), so `ps` can place it."""
    _client(base, timeout).generate(model=model_name(model), prompt="")


def placement(base: str, model: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Where the loaded model sits: `{"size", "size_vram", "gpu_share", "placement": gpu|cpu|split}`
    (None when the server does not list it as running)."""
    name = model_name(model)
    for running in _client(base, timeout).ps().models:
        if name not in (running.model, running.name if hasattr(running, "name") else None):
            continue
        size, vram = int(running.size or 0), int(running.size_vram or 0)
        share = vram / size if size else 0.0
        where = "gpu" if share >= 0.999 else "cpu" if vram == 0 else "split"
        return {"model": name, "size": size, "size_vram": vram, "gpu_share": round(share, 4), "placement": where}
    return None
