"""What a model call cost, from litellm's cost map (the price table litellm ships; the runner sets
LITELLM_LOCAL_MODEL_COST_MAP so it is never fetched).

- API models (`litellm`, `inference`): the price of the tokens the model itself reported, or None
  when the model is not in the map (an unknown price is not a price of 0).
- Local models (`transformers`, `ollama`): 0, with `cost_source: local` (the electricity is in
  the energy figures, not here).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Literal

log = logging.getLogger(__name__)

CostSource = Literal["litellm", "local", "unknown"]
LOCAL_PROVIDERS = ("transformers", "ollama")


def quiet_litellm() -> Any:
    """Import litellm with its console banners ("Give Feedback / Get Help", "Provider List") off:
    they are print() calls, not logging (an unknown model printed one on every lookup)."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def cost_source(provider: str, model: str) -> CostSource:
    """Where this run's cost figures come from."""
    if provider in LOCAL_PROVIDERS:
        return "local"
    return "litellm" if priced(model) else "unknown"


@functools.lru_cache(maxsize=256)
def priced(model: str) -> bool:
    return token_cost(model, 1, 1) is not None


def token_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for these tokens of `model` (a litellm model id), None when litellm has no price for it."""
    if not model:
        return None
    try:
        litellm = quiet_litellm()
        prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=int(prompt_tokens), completion_tokens=int(completion_tokens))
    except Exception:  # litellm raises its own errors (and plain ones) for unmapped models
        log.debug("no litellm price for %s", model, exc_info=True)
        return None
    return round(float(prompt) + float(completion), 10)


def task_cost(provider: str, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
    """A task's cost: 0 for a local model, the priced tokens for an API model, None when unknown."""
    if provider in LOCAL_PROVIDERS:
        return 0.0
    if not priced(model):
        return None
    return token_cost(model, prompt_tokens or 0, completion_tokens or 0)
