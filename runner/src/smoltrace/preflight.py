"""Preflight: is the model usable? Checked before the run folder exists and before any task runs.

1. `check_setup` (no request): the provider resolves (litellm's own provider lookup; an unknown
   one is `UnknownProviderError`, exit 2, with litellm's provider list in one line), credentials
   are there (litellm's key check, an HF token for `inference`, and not `HF_HUB_OFFLINE=1`), a
   local model folder looks like one, the Ollama server has the model (`ollama_server.check`:
   Ollama's own client, list then show; `--ollama-pull` pulls a missing one).
2. `probe` (one real, cheap request, skipped with `--skip-preflight`): a 1-token completion with a
   short timeout, retried under the run's retry policy like any model call. Fatal (exit 3): the
   credentials refused (401/403, naming the variable to set), the model unknown (404), the
   server still unreachable after the retries. A 429/5xx/malformed reply that outlasts the
   retries is a warning: the run's own retries may still get through.

Every failure is a `ModelSetupError`: one line, no traceback.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlparse

from .costs import quiet_litellm
from .models import (
    PROVIDERS,
    ModelSetupError,
    ModelSpec,
    RetryPolicy,
    classify_error,
    error_chain,
    ollama_base,
    reset_call_stats,
    with_retries,
)

log = logging.getLogger(__name__)

PROBE_PROMPT = "smoltrace preflight: reply with one word."  # tests' fake servers count it apart
PROBE_TIMEOUT_S = 20.0
_UNREACHABLE = ("APIConnectionError", "ConnectError", "ConnectTimeout", "ConnectionError", "gaierror")


class UnknownProviderError(ModelSetupError):
    """litellm cannot tell which provider serves the model: a bad flag (exit 2)."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    warning: str | None = None


# -- 1. setup, no request ---------------------------------------------------------------------
def tcp_check(url: str, timeout: float) -> None:
    parsed = urlparse(url if "://" in url else "http://" + url)
    host = parsed.hostname or "localhost"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    with socket.create_connection((host, port), timeout=timeout):
        pass


def litellm_key_variables(model: str, api_base: str | None = None) -> list[str]:
    """The environment variables litellm reads the model's credentials from (its own key check,
    asked as if none were set)."""
    litellm = quiet_litellm()
    with mock.patch.dict(os.environ, {}, clear=True):
        try:
            env = litellm.validate_environment(model=model, api_base=api_base)
        except Exception:  # noqa: BLE001 - no variable to name then
            return []
    return [k for k in env.get("missing_keys") or [] if k.endswith(("_KEY", "_TOKEN", "_SECRET"))] or list(env.get("missing_keys") or [])


def litellm_provider(model: str, api_base: str | None = None) -> str:
    """litellm's own provider lookup; an unknown provider is UnknownProviderError with its list."""
    litellm = quiet_litellm()
    try:
        return str(litellm.get_llm_provider(model=model, api_base=api_base)[1])
    except Exception as err:
        log.debug("litellm provider lookup failed for %s", model, exc_info=True)
        names = sorted({getattr(p, "value", str(p)) for p in litellm.provider_list})
        raise UnknownProviderError(
            f"litellm does not know the provider of {model!r}: write the model as PROVIDER/MODEL "
            f"(e.g. openai/gpt-4.1-nano) with PROVIDER one of: {', '.join(names)}"
        ) from err


def check_setup(spec: ModelSpec, timeout: float = 5.0) -> str:
    """Everything that needs no model request. Returns a one-line description of the target."""
    if spec.provider == "ollama":
        from .ollama_server import check

        # Ollama's own client: list (the server answers), show (the model is there; --ollama-pull pulls it)
        return check(ollama_base(spec.api_base), spec.model, pull=spec.ollama_pull, timeout=timeout)
    if spec.provider == "litellm":
        provider = litellm_provider(spec.model, spec.api_base)
        if "api_key" not in spec.model_args:
            litellm = quiet_litellm()
            try:
                env = litellm.validate_environment(model=spec.model, api_base=spec.api_base)
            except Exception as err:
                raise ModelSetupError(f"litellm cannot check the credentials of {spec.model!r}: {str(err).splitlines()[0]}") from err
            if not env.get("keys_in_environment", True):
                missing = ", ".join(env.get("missing_keys") or [])
                hint = " (any value for a self-hosted server without authentication)" if spec.api_base else ""
                raise ModelSetupError(f"{spec.model} needs {missing} in the environment{hint}")
        where = f" at {spec.api_base}" if spec.api_base else ""
        log.debug("litellm resolves %s to provider %s", spec.model, provider)
        return f"litellm {spec.model}{where}"
    if spec.provider == "inference":
        if not spec.hf_token and not os.environ.get("HF_TOKEN"):
            raise ModelSetupError("--provider inference needs a Hugging Face token: set HF_TOKEN or pass --hf-token-file")
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:  # huggingface_hub's InferenceClient refuses every request then, even to --api-base
            raise ModelSetupError("--provider inference makes requests through huggingface_hub, which HF_HUB_OFFLINE=1 forbids: unset it")
        where = f" at {spec.api_base}" if spec.api_base else ""
        return f"inference {spec.model}{where}"
    if spec.provider == "transformers":
        path = Path(spec.model).expanduser()
        if path.exists():
            if not (path / "config.json").exists():
                raise ModelSetupError(f"{spec.model} is not a transformers model folder (no config.json)")
            return f"transformers {path}"
        if re.fullmatch(r"[\w.-]+/[\w.-]+", spec.model):
            return f"transformers {spec.model} (Hugging Face Hub / cache)"
        raise ModelSetupError(f"no transformers model at {spec.model!r}: give a local folder or a Hub id (owner/name)")
    raise ModelSetupError(f"unknown provider {spec.provider!r}; choose one of {', '.join(PROVIDERS)}")


def check_reachable(spec: ModelSpec, timeout: float = 5.0) -> None:
    """A TCP connect to --api-base (what is left of preflight under --skip-preflight)."""
    if spec.provider in ("litellm", "inference") and spec.api_base:
        try:
            tcp_check(spec.api_base, timeout)
        except OSError as err:
            raise ModelSetupError(f"cannot reach the model server at {spec.api_base} ({err.strerror or err})") from err


# -- 2. one real request ----------------------------------------------------------------------
def _one_token(spec: ModelSpec, model: Any, timeout: float) -> Any:
    messages = [{"role": "user", "content": PROBE_PROMPT}]
    if spec.provider == "litellm":
        litellm = quiet_litellm()
        kwargs = {k: v for k, v in getattr(model, "kwargs", {}).items() if k not in ("max_tokens", "max_completion_tokens")}
        kwargs.update(max_tokens=1, timeout=timeout, max_retries=0)
        if getattr(model, "api_key", None):
            kwargs["api_key"] = model.api_key
        return litellm.completion(model=model.model_id, api_base=spec.api_base, messages=messages, **kwargs)
    if spec.provider == "inference":
        from huggingface_hub import InferenceClient

        client = InferenceClient(**{**model.client_kwargs, "timeout": timeout})
        extra = {"model": model.kwargs["model"]} if model.kwargs.get("model") else {}
        return client.chat_completion(messages=messages, max_tokens=1, **extra)
    return None


def _unreachable(err: BaseException) -> bool:
    return any(type(e).__name__ in _UNREACHABLE or isinstance(e, ConnectionError | socket.gaierror) for e in error_chain(err))


def _status(err: BaseException) -> int | None:
    for e in error_chain(err):
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def credential_hint(spec: ModelSpec) -> str:
    if spec.provider == "inference":
        return "set HF_TOKEN (or --hf-token-file) to a token with inference access"
    names = litellm_key_variables(spec.model, spec.api_base)
    if names:
        return f"set {' or '.join(names)} to a valid key"
    return "pass a valid key with --model-args api_key=... or the provider's key variable"


def probe(spec: ModelSpec, model: Any, retry: RetryPolicy, timeout: float = PROBE_TIMEOUT_S) -> ProbeResult:
    """One 1-token request through the provider's client. Raises ModelSetupError when the model
    cannot be used; returns a warning when the server only answered with transient errors."""
    if spec.provider not in ("litellm", "inference"):
        return ProbeResult(ok=True)  # ollama: its model listing was the request; transformers: local
    where = spec.api_base or spec.model
    reset_call_stats()
    call = with_retries(lambda: _one_token(spec, model, timeout), retry)
    try:
        call()
    except Exception as err:
        log.debug("preflight request failed", exc_info=True)
        attempts = retry.max_retries + 1
        kind = classify_error(err)
        status = _status(err)
        text = _first_line(err)
        if kind == "auth_error" or status in (401, 403):
            raise ModelSetupError(
                f"{where} refused the credentials for {spec.model} (HTTP {status or 401}): {credential_hint(spec)}"
            ) from err
        if status == 404 or type(err).__name__ == "NotFoundError" or re.search(r"model.{0,80}(not found|does not exist)", text, re.I):
            raise ModelSetupError(f"{where} does not know the model {spec.model!r} ({text}); check --model") from err
        if kind == "timeout":
            raise ModelSetupError(f"the model server at {where} did not answer within {timeout:g} s ({attempts} attempt(s))") from err
        if _unreachable(err):
            raise ModelSetupError(f"cannot reach the model server at {where} after {attempts} attempt(s) ({text})") from err
        return ProbeResult(ok=False, warning=f"preflight request to {where} failed ({kind}: {text}); the run goes on with its retries")
    return ProbeResult(ok=True)
